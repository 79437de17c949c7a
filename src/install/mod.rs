//! install (placeholder until its module lands)
