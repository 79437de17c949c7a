//! install: unpack package tarballs safely and read their relocation metadata.
pub mod buildinfo;
pub mod projection;
pub mod receipt;
pub mod root;
pub mod unpack;
pub mod installer;
pub mod plan;
