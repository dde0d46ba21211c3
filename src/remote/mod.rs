//! Talking to other relays: dialing (address policy, TLS), NIP-77 negentropy, fetching what a
//! reconciliation found, misbehaviour budgets, what their free-text messages mean, and health.
//! The wire itself (messages, filters, the connection, pagination) is [`crate::wire`].

pub mod abuse;
pub mod classify;
pub mod dial;
pub mod health;
pub mod historic;
pub mod negentropy;

pub use classify::{classify, Signal, Source};
pub use dial::{DialError, Dialer, NetDialer, WsStream};
pub use health::HealthStatus;
