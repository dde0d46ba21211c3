//! Deciding what to sync: indexes, relay targets, diffs, filters and the per-relay lifecycle.
//!
//! The engine knows no host: it reads the host's events through traits and hands fetched events
//! to a sink, so it runs against in-memory stores in tests.

pub mod build;
pub mod coordinator;
pub mod diff;
pub mod index;
pub mod layers;
pub mod lifecycle;
pub mod pending;
pub mod rejected;
pub mod relay_task;
pub mod relays;
pub mod session;
pub mod status;
pub mod store;
pub mod targets;

pub use coordinator::{spawn_engine, EngineConfig, SyncEngine};
pub use diff::{compute_actions, relays_to_connect, stale_items, AddFilters};
pub use index::{RepoEntry, RepoSyncIndex};
pub use layers::{filters_for_batch, BatchFilters, Layer, LivePlan, ReqLimits};
pub use lifecycle::{ConnectPlan, ConnectStrategy, ConsolidationPlan, LifecycleConfig};
pub use pending::{Batch, BatchId, BatchSpec, Method, PendingSyncIndex};
pub use relay_task::{Item, RelayTarget};
pub use relays::{PersistedRelay, RelayState, RelayStatus, RelaySyncIndex};
pub use status::{RelayReport, SyncSettings, SyncStatus};
pub use store::{Fetched, LocalStore, MemoryStore};
pub use targets::{
    derive_relay_targets, summarize_refusals, ItemSet, RefusalSummary, RefusedReason, TargetRules, Targets,
};
