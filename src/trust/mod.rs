//! trust (placeholder until its module lands)
