//! Talking to other relays: websocket client (one task per relay), NIP-77 negentropy, REQ
//! pagination and health.

pub mod classify;
pub mod filter;
pub mod health;
pub mod paginate;

pub use classify::{classify, Signal, Source};
pub use filter::Filter;
pub use health::{backoff_secs, Health, HealthConfig, HealthStatus};
pub use paginate::{PageEnd, PaginationReport, Paginator};
