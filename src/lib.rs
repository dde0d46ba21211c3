//! grasp-sync: makes a strfry relay a GRASP-02 relay.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod host;
pub mod metrics;
pub mod policy;
pub mod remote;
#[cfg(any(test, feature = "testkit"))]
#[doc(hidden)]
pub mod testkit;
pub mod wire;
