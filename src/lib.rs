//! sf-cache: a native client for Spack binary buildcaches.
pub mod build;
pub mod buildcache;
pub mod cli;
pub mod commands;
pub mod config;
pub mod fetch;
pub mod fs;
pub mod install;
pub mod mirror;
pub mod modules;
pub mod publish;
pub mod relocate;
pub mod slurm_factory;
pub mod spec;
pub mod store;
pub mod trust;
pub mod ui;
