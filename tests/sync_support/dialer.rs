//! A dialer for tests: loopback URLs are dialled for real; any other URL is only recorded (no
//! socket, no DNS lookup).

use std::sync::Mutex;

use grasp_sync::policy::RelayUrl;
use grasp_sync::remote::dial::{handshake, DialError, DialFuture, Dialer};

#[derive(Default)]
pub struct TestDialer {
    attempts: Mutex<Vec<String>>,
}

impl TestDialer {
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
            let tcp = tokio::net::TcpStream::connect((ip, url.port()))
                .await
                .map_err(|e| DialError::Connect(url.to_string(), e.to_string()))?;
            handshake(url, tcp).await
        })
    }
}
