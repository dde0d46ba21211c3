//! Deciding what to sync: relay targets, the per-relay planner and its driver.
//!
//! The engine knows no host: it reads the host's events through traits and hands fetched events
//! to a sink, so it runs against in-memory stores in tests.

pub(crate) mod coordinator;
pub(crate) mod inbox;
pub(crate) mod layers;
pub(crate) mod lifecycle;
pub mod relay_task;
pub(crate) mod relays;
pub(crate) mod session;
pub(crate) mod status;
pub mod store;
pub mod targets;

pub use coordinator::{spawn_engine, EngineCommand, EngineConfig, EngineHandle, SyncEngine, ENGINE_QUEUE};
pub use lifecycle::ConnectStrategy;
pub use relay_task::{Item, RelayTarget};
pub use relays::{PersistedRelay, RelayState, RelayStatus};
pub use status::{HealthStatus, RelayReport, SyncSettings, SyncStatus};
pub use store::{Fetched, LocalStore, MemoryStore};
pub use targets::{
    derive_relay_targets, summarize_refusals, ItemSet, RefusalSummary, RefusedReason, TargetRules, Targets,
};
