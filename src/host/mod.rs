//! The strfry side: the writePolicy plugin, the LMDB reader, the host event stream and ingest.

pub mod ingest;
pub mod lmdb;
pub mod plugin;
pub mod stream;

/// A websocket to the host relay.
pub type HostWs = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects to the host relay with Nagle's algorithm off: our frames are small and often sent one at
/// a time, and waiting to coalesce them (against the peer's delayed ACKs) adds tens of milliseconds.
pub async fn connect(url: &crate::policy::RelayUrl) -> Result<HostWs, tokio_tungstenite::tungstenite::Error> {
    Ok(tokio_tungstenite::connect_async_with_config(url.as_str(), None, true).await?.0)
}
