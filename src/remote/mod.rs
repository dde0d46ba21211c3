//! Talking to other relays: websocket client (one task per relay), NIP-77 negentropy, REQ
//! pagination and health.

pub mod abuse;
pub mod classify;
pub mod conn;
pub mod dial;
pub mod filter;
pub mod health;
pub mod historic;
pub mod message;
pub mod negentropy;
pub mod paginate;

pub use classify::{classify, Signal, Source};
pub use conn::{ConnError, Connection, WireCounters};
pub use dial::{DialError, Dialer, NetDialer, WsStream};
pub use filter::Filter;
pub use health::backoff_secs;
pub use message::{ClientMsg, RelayMsg};
pub use paginate::{PageEnd, PaginationReport, Paginator};
