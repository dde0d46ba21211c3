//! Talking to other relays: websocket client (one task per relay), NIP-77 negentropy, REQ
//! pagination and health.

pub mod conn;
pub mod dial;
pub mod filter;
pub mod historic;
pub mod message;
pub mod negentropy;

pub use conn::{ConnError, Connection, WireCounters};
pub use dial::{DialError, Dialer, NetDialer, WsStream};
pub use filter::Filter;
pub use message::{ClientMsg, RelayMsg};
