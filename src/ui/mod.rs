//! ui (placeholder until its module lands)
