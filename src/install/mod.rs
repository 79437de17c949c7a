//! install: unpack package tarballs safely and read their relocation metadata.
pub mod buildinfo;
pub mod unpack;
pub mod projection;
pub mod receipt;
pub mod root;
pub mod verify;
pub mod uninstall;
pub mod view;
pub mod gc;
