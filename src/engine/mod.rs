//! Deciding what to sync: indexes, relay targets, diffs, filters and the per-relay lifecycle.
//!
//! The engine knows no host: it reads the host's events through traits and hands fetched events
//! to a sink, so it runs against in-memory stores in tests.

pub mod build;
pub mod index;

pub use index::{RepoEntry, RepoSyncIndex};
