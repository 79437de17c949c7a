//! spec (placeholder until its module lands)
