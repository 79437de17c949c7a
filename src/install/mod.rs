//! install: put verified, relocated packages into an install root, and manage what is there.
//!
//! `plan` resolves closures, `installer` fetches, stages (`unpack` + `crate::relocate`) and
//! commits with one rename per package (`receipt` inside the prefix); `verify`, `uninstall`,
//! `view` and `gc` work from the receipts.
pub mod flow;
pub mod gc;
pub mod installer;
pub mod moved;
pub mod plan;
pub mod projection;
pub mod receipt;
pub mod root;
pub mod spack_db;
pub mod uninstall;
pub mod unpack;
pub mod verify;
pub mod view;
