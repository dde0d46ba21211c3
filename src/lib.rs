//! grasp-sync: makes a strfry relay a GRASP-02 relay.

pub mod accepted;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod host;
pub mod metrics;
pub mod policy;
pub mod remote;
pub mod status;
#[cfg(any(test, feature = "testkit"))]
#[doc(hidden)]
pub mod testkit;
pub mod wire;
