//! The metrics endpoint over HTTP/1.1 (hyper): `GET /metrics`, `GET /status`, `GET /healthz`, and
//! the client `grasp-sync status` uses to read `/status`.
//!
//! The server is bounded: at most [`MAX_CONNECTIONS`] open connections (more are closed as soon as
//! they are accepted), a request head of at most [`MAX_HEAD_BYTES`] (a longer one is answered
//! `431` and the connection closed), [`HEADER_READ_TIMEOUT`] to send a request head, and
//! [`CONNECTION_LIFETIME`] per connection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HOST};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::{render, Metrics};

/// Open connections at most; one more is closed as soon as it is accepted.
pub const MAX_CONNECTIONS: usize = 1024;
/// Longest request head (request line and headers) read; hyper's smallest allowed buffer.
pub const MAX_HEAD_BYTES: usize = 8192;
/// A client that has not sent a whole request head by then is disconnected.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection (keep-alive included) is closed after this long, once its request in flight is
/// answered.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// How long the client waits to connect, and then for the whole answer.
const CLIENT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CLIENT_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer body the client reads.
const CLIENT_MAX_BODY: usize = 64 << 20;

/// The endpoint's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub connection_lifetime: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: MAX_CONNECTIONS,
            header_read_timeout: HEADER_READ_TIMEOUT,
            connection_lifetime: CONNECTION_LIFETIME,
        }
    }
}

/// Serves the endpoint on `listener` until the task is dropped (its connections with it).
pub async fn serve(listener: TcpListener, metrics: Metrics) {
    serve_with(listener, metrics, Limits::default()).await
}

/// [`serve`] with other bounds.
pub async fn serve_with(listener: TcpListener, metrics: Metrics, limits: Limits) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // Connections are served in tasks of this set, so they end when the server is stopped.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, typically: give the process a moment to free some.
                tracing::warn!(error = %e, "metrics endpoint cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("metrics endpoint at its connection limit; connection closed");
            continue;
        };
        let metrics = metrics.clone();
        connections.spawn(async move {
            let _slot = slot;
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size(MAX_HEAD_BYTES)
                .max_headers(32);
            let service = service_fn(move |req: Request<Incoming>| {
                let answer = respond(&metrics, req.method(), req.uri().path());
                async move { Ok::<_, Infallible>(answer) }
            });
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = tokio::time::sleep(limits.connection_lifetime) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(limits.header_read_timeout, conn).await;
                }
            }
        });
    }
}

/// The answer to one request.
fn respond(metrics: &Metrics, method: &Method, path: &str) -> Response<Full<Bytes>> {
    let (code, ctype, body) = match (method, path) {
        (&Method::GET, "/metrics") => (StatusCode::OK, render::content_type(), metrics.render_prometheus()),
        (&Method::GET, "/status") => {
            (StatusCode::OK, "application/json", serde_json::to_string_pretty(&metrics.snapshot()).unwrap_or_default())
        }
        (&Method::GET, "/healthz") => match metrics.health() {
            Ok(()) => (StatusCode::OK, "text/plain", "ok\n".to_string()),
            Err(why) => (StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("unhealthy: {why}\n")),
        },
        (&Method::GET, _) => {
            (StatusCode::NOT_FOUND, "text/plain", "not found: try /metrics, /status or /healthz\n".to_string())
        }
        _ => (StatusCode::METHOD_NOT_ALLOWED, "text/plain", "only GET\n".to_string()),
    };
    let mut answer = Response::new(Full::new(Bytes::from(body)));
    *answer.status_mut() = code;
    answer.headers_mut().insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static(ctype));
    if code == StatusCode::METHOD_NOT_ALLOWED {
        answer.headers_mut().insert(ALLOW, hyper::header::HeaderValue::from_static("GET"));
    }
    answer
}

/// `GET path` from the daemon's endpoint at `addr`: the status code and the body.
pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(StatusCode, Bytes)> {
    let stream = tokio::time::timeout(CLIENT_CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow::anyhow!("timed out connecting to {addr}"))?
        .map_err(|e| anyhow::anyhow!("cannot reach the daemon at {addr} (is `grasp-sync run` running?): {e}"))?;
    let exchange = async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let request = async {
            let req = Request::get(path).header(HOST, addr.to_string()).body(Empty::<Bytes>::new())?;
            let answer = sender.send_request(req).await?;
            let code = answer.status();
            let body = Limited::new(answer.into_body(), CLIENT_MAX_BODY)
                .collect()
                .await
                .map_err(|e| anyhow::anyhow!("reading the answer from {addr}: {e}"))?
                .to_bytes();
            anyhow::Ok((code, body))
        };
        // The connection is driven here, alongside the request, rather than in a task of its own.
        tokio::pin!(conn, request);
        let mut conn_done = false;
        loop {
            tokio::select! {
                answer = &mut request => return answer,
                closed = &mut conn, if !conn_done => {
                    conn_done = true;
                    closed?;
                }
            }
        }
    };
    tokio::time::timeout(CLIENT_ANSWER_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow::anyhow!("the daemon at {addr} did not answer within {CLIENT_ANSWER_TIMEOUT:?}"))?
}

/// Fetches `/status` from a running daemon (used by `grasp-sync status`).
pub async fn fetch_status(addr: SocketAddr) -> anyhow::Result<super::Status> {
    let (code, body) = get(addr, "/status").await?;
    if code != StatusCode::OK {
        anyhow::bail!("daemon answered: {code}");
    }
    Ok(serde_json::from_slice(&body)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn raw(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut body = Vec::new();
        let _ = s.read_to_end(&mut body).await;
        String::from_utf8_lossy(&body).into_owned()
    }

    #[tokio::test]
    async fn endpoint_serves_metrics_status_and_health_and_refuses_the_rest() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let m = super::super::tests::sample();
        let server = tokio::spawn(serve(listener, m.clone()));

        let status = fetch_status(addr).await.unwrap();
        assert_eq!((status.repos, status.relays.len()), (3, 2));
        let (code, body) = get(addr, "/metrics").await.unwrap();
        assert_eq!(code, StatusCode::OK);
        assert!(String::from_utf8_lossy(&body).contains("grasp_sync_repos 3"));

        // Host not connected, loop never ticked: unhealthy; both true: healthy.
        let (code, body) = get(addr, "/healthz").await.unwrap();
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body:?}");
        m.update(|s| s.host_connected = true);
        m.tick();
        assert_eq!(get(addr, "/healthz").await.unwrap().0, StatusCode::OK);

        assert_eq!(get(addr, "/nope").await.unwrap().0, StatusCode::NOT_FOUND);
        let answer =
            raw(addr, b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
        let answer = raw(addr, b"not http at all\r\n\r\n").await;
        assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 400"), "{answer}");
        let err = fetch_status(addr.ip().to_string().parse::<std::net::IpAddr>().map(|ip| (ip, 1).into()).unwrap())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("cannot reach the daemon"), "{err}");
        server.abort();
    }

    #[tokio::test]
    async fn a_request_head_over_the_limit_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, Metrics::new("wss://x")));
        let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(MAX_HEAD_BYTES * 2));
        let answer = raw(addr, long.as_bytes()).await;
        assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 431"), "{answer}");
        assert_eq!(get(addr, "/metrics").await.unwrap().0, StatusCode::OK);
        server.abort();
    }

    #[tokio::test]
    async fn stopping_the_server_closes_its_open_connections() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Kept-alive connections are not timed out during the test.
        let limits = Limits { header_read_timeout: Duration::from_secs(3600), ..Limits::default() };
        let server = tokio::spawn(serve_with(listener, Metrics::new("wss://x"), limits));
        let mut kept = TcpStream::connect(addr).await.unwrap();
        kept.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut head = [0u8; 12];
        kept.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        server.abort();
        let _ = server.await;
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(30), kept.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "a kept-alive connection outlived its server");
        assert!(TcpStream::connect(addr).await.is_err(), "the port is still open");
    }

    #[tokio::test]
    async fn a_client_that_sends_no_request_head_in_time_is_disconnected() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = Limits { header_read_timeout: Duration::from_millis(200), ..Limits::default() };
        let server = tokio::spawn(serve_with(listener, Metrics::new("wss://x"), limits));
        let mut idle = TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"GET /metrics HTTP/1.1\r\n").await.unwrap();
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(30), idle.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "an idle client is still connected after 30 s");
        server.abort();
    }
}
