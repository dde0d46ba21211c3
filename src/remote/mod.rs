//! Talking to other relays: websocket client (one task per relay), NIP-77 negentropy, REQ
//! pagination and health.

pub mod filter;

pub use filter::Filter;
