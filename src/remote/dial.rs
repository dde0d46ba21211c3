//! Opening websockets to relays through a [`Dialer`], so tests can supply their own.
//!
//! The production [`NetDialer`] resolves the host, refuses resolved loopback, private, link-local,
//! multicast and reserved addresses unless private addresses are allowed, then speaks websocket,
//! over rustls (ring provider, webpki roots) for `wss`.
//!
//! permessage-deflate is offered; where a relay accepts it (strfry does by default),
//! [`crate::wire::deflate`] compresses and inflates under tungstenite, which has no support for
//! it. The whole dial (DNS, TCP, TLS, websocket handshake) is bounded by the caller's connect
//! timeout.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::policy::url::classify_ip;
use crate::policy::{AddressClass, RelayUrl};
use crate::wire::deflate::{self, Deflate};

/// The byte stream under a relay's websocket: the socket (plain or TLS) and permessage-deflate.
pub type RemoteStream = Deflate<MaybeTlsStream<TcpStream>>;

/// A websocket to a relay.
pub type WsStream = WebSocketStream<RemoteStream>;

/// The future a [`Dialer`] returns.
pub type DialFuture<'a> = Pin<Box<dyn Future<Output = Result<WsStream, DialError>> + Send + 'a>>;

/// Largest frame or message we accept from a relay: strfry may send 500 kB of negentropy
/// binary, i.e. 1 MB of hex, plus the JSON around it.
pub const MAX_INCOMING_FRAME: usize = 1_200_000;

/// Why a relay could not be reached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialError {
    #[error("refused: {0} resolves to a {1:?} address (private addresses are not allowed)")]
    Refused(String, AddressClass),
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, String),
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    #[error("websocket handshake with {0} failed: {1}")]
    Handshake(String, String),
    #[error("connecting to {0} timed out")]
    Timeout(String),
}

/// Opens a websocket to a relay URL.
pub trait Dialer: Send + Sync + 'static {
    fn dial<'a>(&'a self, url: &'a RelayUrl) -> DialFuture<'a>;
}

/// Read buffer of a relay connection. A frame larger than this still arrives whole (the buffer
/// grows for it); the default (128 KiB) held about 7 MB for 50 relays of mostly 1 kB events.
pub const READ_BUFFER: usize = 16 * 1024;

/// Websocket settings for every relay connection.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_INCOMING_FRAME))
        .max_frame_size(Some(MAX_INCOMING_FRAME))
        .read_buffer_size(READ_BUFFER)
}

/// Installs rustls' ring crypto provider as the process default (idempotent).
pub fn install_crypto_provider() {
    // An error only means a provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Whether an address of this class may be dialled.
pub fn address_allowed(class: AddressClass, allow_private: bool) -> bool {
    match class {
        AddressClass::Public => true,
        AddressClass::Loopback | AddressClass::Private | AddressClass::LinkLocal => allow_private,
        AddressClass::Multicast | AddressClass::Reserved => false,
    }
}

/// TLS settings for `wss` relays: the webpki roots, no client certificate.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            install_crypto_provider();
            let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
            Arc::new(rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth())
        })
        .clone()
}

/// Completes TLS (for `wss`) and the websocket handshake over an open TCP stream, offering
/// permessage-deflate.
pub async fn handshake(url: &RelayUrl, tcp: TcpStream) -> Result<WsStream, DialError> {
    let fail = |e: String| DialError::Handshake(url.to_string(), e);
    let _ = tcp.set_nodelay(true);
    let socket = if url.is_tls() {
        let name = rustls::pki_types::ServerName::try_from(url.host()).map_err(|e| fail(e.to_string()))?;
        let tls = tokio_rustls::TlsConnector::from(tls_config()).connect(name, tcp).await;
        MaybeTlsStream::Rustls(tls.map_err(|e| fail(format!("TLS: {e}")))?)
    } else {
        MaybeTlsStream::Plain(tcp)
    };
    let mut request = url.as_str().into_client_request().map_err(|e| fail(e.to_string()))?;
    request.headers_mut().insert("Sec-WebSocket-Extensions", HeaderValue::from_static(deflate::OFFER));
    let stream = Deflate::new(socket, MAX_INCOMING_FRAME);
    tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config()))
        .await
        .map(|(ws, _resp)| ws)
        .map_err(|e| fail(e.to_string()))
}

/// DNS, address policy, TCP, TLS and websocket: the production dialer.
#[derive(Debug, Clone, Default)]
pub struct NetDialer {
    pub allow_private: bool,
}

impl NetDialer {
    pub fn new(allow_private: bool) -> Self {
        NetDialer { allow_private }
    }

    async fn resolve(&self, url: &RelayUrl) -> Result<Vec<SocketAddr>, DialError> {
        let host = url.host();
        let class = url.address_class();
        if !address_allowed(class, self.allow_private) {
            return Err(DialError::Refused(url.to_string(), class));
        }
        let all: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, url.port())],
            Err(_) => tokio::net::lookup_host((host.as_str(), url.port()))
                .await
                .map_err(|e| DialError::Resolve(url.to_string(), e.to_string()))?
                .collect(),
        };
        let mut refused = None;
        let allowed: Vec<SocketAddr> = all
            .into_iter()
            .filter(|a| {
                let class = classify_ip(a.ip());
                let ok = address_allowed(class, self.allow_private);
                if !ok {
                    refused = Some(class);
                }
                ok
            })
            .collect();
        match (allowed.is_empty(), refused) {
            (true, Some(class)) => Err(DialError::Refused(url.to_string(), class)),
            (true, None) => Err(DialError::Resolve(url.to_string(), "no addresses".into())),
            _ => Ok(allowed),
        }
    }
}

impl Dialer for NetDialer {
    fn dial<'a>(&'a self, url: &'a RelayUrl) -> DialFuture<'a> {
        Box::pin(async move {
            let addrs = self.resolve(url).await?;
            let mut last = String::new();
            for addr in addrs {
                match TcpStream::connect(addr).await {
                    Ok(tcp) => return handshake(url, tcp).await,
                    Err(e) => last = e.to_string(),
                }
            }
            Err(DialError::Connect(url.to_string(), last))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> RelayUrl {
        RelayUrl::parse(s).unwrap()
    }

    #[tokio::test]
    async fn private_and_loopback_literals_are_refused_without_a_socket() {
        let d = NetDialer::new(false);
        for u in ["ws://127.0.0.1:1", "ws://10.1.2.3", "ws://[::1]:9", "ws://localhost:7777", "ws://169.254.1.1"] {
            assert!(matches!(d.dial(&url(u)).await, Err(DialError::Refused(..))), "{u}");
        }
    }

    #[tokio::test]
    async fn reserved_addresses_are_refused_even_when_private_is_allowed() {
        let d = NetDialer::new(true);
        assert!(matches!(d.dial(&url("ws://0.0.0.0:1")).await, Err(DialError::Refused(..))));
        assert!(matches!(d.dial(&url("ws://224.0.0.1:1")).await, Err(DialError::Refused(..))));
    }

    #[tokio::test]
    async fn loopback_is_dialled_when_allowed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio_tungstenite::accept_async(tcp).await.is_ok()
        });
        let d = NetDialer::new(true);
        assert!(d.dial(&url(&format!("ws://127.0.0.1:{port}"))).await.is_ok());
        assert!(server.await.unwrap());
    }
}
