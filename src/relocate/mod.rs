//! relocate (placeholder until its module lands)
