//! grasp-sync: makes a strfry relay a GRASP-02 relay.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod engine;
#[doc(hidden)]
pub mod fuzz_checks;
pub mod host;
pub mod metrics;
pub mod policy;
pub mod remote;
