//! Talking to other relays: dialing (address policy, TLS), NIP-77 negentropy, fetching what a
//! reconciliation found, misbehaviour budgets and what their free-text messages mean.
//! The wire itself (messages, filters, the connection, pagination) is [`crate::wire`].

pub mod abuse;
pub mod classify;
pub mod dial;
pub mod historic;
pub mod negentropy;

pub use classify::{classify, Signal, Source};
pub use dial::{DialError, Dialer, NetDialer, WsStream};
