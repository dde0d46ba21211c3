//! The strfry side: the writePolicy plugin, the LMDB reader, the host event stream and ingest.

pub mod ingest;
pub mod lmdb;
pub mod plugin;
pub mod stream;
