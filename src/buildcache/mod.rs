//! buildcache (placeholder until its module lands)
