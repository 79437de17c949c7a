//! store (placeholder until its module lands)
