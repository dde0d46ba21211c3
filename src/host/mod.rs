//! The strfry side: the writePolicy plugin, the LMDB reader (and, later, the event stream and ingest).

pub mod lmdb;
pub mod plugin;
