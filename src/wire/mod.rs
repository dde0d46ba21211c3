//! The nostr wire, below both the host and the remote relays: NIP-01/NIP-77 messages, filters,
//! the websocket connection with its deadlines, REQ pagination, reconnect backoff and the clock.
//!
//! Nothing here knows whose relay is on the other end: `host` (strfry) and `remote` (the relays
//! repositories announce) both use it. It imports only the policy's event type.

pub mod backoff;
pub mod clock;
pub mod conn;
pub mod deflate;
pub mod filter;
pub mod message;
pub mod paginate;
pub mod reason;

pub use backoff::backoff;
pub use clock::unix_now;
pub use conn::{ConnError, Connection, Liveness, WireCounters};
pub use filter::Filter;
pub use message::{ClientMsg, MsgError, RelayMsg};
pub use paginate::{PageEnd, PaginationReport, Paginator};
