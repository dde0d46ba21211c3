//! Deciding what to sync: indexes, relay targets, diffs, filters and the per-relay lifecycle.
//!
//! The engine knows no host: it reads the host's events through traits and hands fetched events
//! to a sink, so it runs against in-memory stores in tests.

pub mod coordinator;
pub mod index;
pub mod relay_task;
pub mod session;
pub mod status;
pub mod store;

pub use coordinator::{spawn_engine, EngineConfig, SyncEngine};
pub use index::{RepoEntry, RepoSyncIndex};
pub use relay_task::{Item, RelayTarget};
pub use status::{Health, RelayReport, RelayStatus, SyncSettings, SyncStatus};
pub use store::{Fetched, LocalStore, MemoryStore};
