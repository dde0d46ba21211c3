//! The strfry side: the writePolicy plugin (and, later, the LMDB reader, event stream and ingest).

pub mod ingest;
pub mod plugin;
pub mod stream;
