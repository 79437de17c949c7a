//! fetch (placeholder until its module lands)
