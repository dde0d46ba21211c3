//! The accepted state both roles share: the repo index (which repositories and root events list
//! which relays) and how it and the policy's accepted view are built from any store of events.
//! The plugin uses it without the sync engine; the daemon and the engine read the index.

pub mod build;
pub mod index;

pub use index::{RepoEntry, RepoSyncIndex};
