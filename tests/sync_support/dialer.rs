//! A dialer for tests: loopback URLs are dialled for real; any other URL is only recorded (no
//! socket, no DNS lookup).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use grasp_sync::policy::RelayUrl;
use grasp_sync::remote::dial::{handshake, DialError, DialFuture, Dialer};

#[derive(Default)]
pub struct TestDialer {
    attempts: Mutex<Vec<String>>,
    /// Socket send buffer of every connection, in bytes (0: the system's default).
    send_buffer: AtomicU32,
}

impl TestDialer {
    /// A dialer whose connections have a small send buffer, so a peer that stops reading
    /// blocks our writes after a few kilobytes instead of megabytes.
    pub fn with_send_buffer(bytes: u32) -> TestDialer {
        TestDialer { send_buffer: AtomicU32::new(bytes), ..TestDialer::default() }
    }

    pub fn attempts(&self) -> Vec<String> {
        self.attempts.lock().unwrap().clone()
    }

    pub fn attempted(&self, url: &str) -> bool {
        self.attempts().iter().any(|a| a == url)
    }
}

impl Dialer for TestDialer {
    fn dial<'a>(&'a self, url: &'a RelayUrl) -> DialFuture<'a> {
        self.attempts.lock().unwrap().push(url.to_string());
        Box::pin(async move {
            let host = url.host();
            if host != "127.0.0.1" && host != "::1" {
                return Err(DialError::Connect(url.to_string(), "test double: only loopback is dialled".into()));
            }
            let ip: std::net::IpAddr = host.parse().unwrap();
            let err = |e: std::io::Error| DialError::Connect(url.to_string(), e.to_string());
            let socket = if ip.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }
                .map_err(err)?;
            let send_buffer = self.send_buffer.load(Ordering::Relaxed);
            if send_buffer > 0 {
                socket.set_send_buffer_size(send_buffer).map_err(err)?;
            }
            let tcp = socket.connect((ip, url.port()).into()).await.map_err(err)?;
            handshake(url, tcp).await
        })
    }
}
