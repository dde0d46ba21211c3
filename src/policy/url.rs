//! Relay URL parsing, normalisation and address classification.
//!
//! Pure functions: nothing here resolves names or opens sockets.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A relay URL in normal form: `ws`/`wss` scheme, lower-case host, no default port,
/// no trailing slash, no fragment, no credentials.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RelayUrl(String);

/// Why a relay URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("not a URL: {0}")]
    Parse(String),
    #[error("scheme `{0}` is not ws or wss")]
    Scheme(String),
    #[error("URL has no host")]
    NoHost,
    #[error("URL carries credentials")]
    Credentials,
    #[error("URL is longer than {MAX_URL_LEN} bytes")]
    TooLong,
}

/// Longest URL we accept; announcements are untrusted input.
pub const MAX_URL_LEN: usize = 512;

impl RelayUrl {
    /// Parses and normalises a relay URL.
    pub fn parse(input: &str) -> Result<Self, UrlError> {
        let input = input.trim();
        if input.len() > MAX_URL_LEN {
            return Err(UrlError::TooLong);
        }
        let mut url = url::Url::parse(input).map_err(|e| UrlError::Parse(e.to_string()))?;
        match url.scheme() {
            "ws" | "wss" => {}
            other => return Err(UrlError::Scheme(other.to_string())),
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(UrlError::NoHost);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlError::Credentials);
        }
        url.set_fragment(None);
        // `url` already lower-cases scheme and host and drops the scheme's default port.
        let mut s = url.to_string();
        if url.query().is_none() {
            while s.ends_with('/') && s.len() > "wss://".len() {
                s.pop();
            }
        }
        // A trailing dot in a DNS name names the same host.
        if let Some(host) = url.host_str() {
            if host.ends_with('.') && host.len() > 1 {
                let trimmed = host.trim_end_matches('.');
                s = s.replacen(host, trimmed, 1);
                // Without its dots the host may read differently (`127.0.0..` becomes the IPv4
                // address 127.0.0.0), so the result is parsed once more. It has no trailing dot
                // now, so this recursion ends at the next level.
                return Self::parse(&s);
            }
        }
        // Percent-encoding can make the normal form up to nine times longer than the input.
        if s.len() > MAX_URL_LEN {
            return Err(UrlError::TooLong);
        }
        Ok(RelayUrl(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn url(&self) -> url::Url {
        url::Url::parse(&self.0).expect("normalised relay URL re-parses")
    }

    /// The host as written in the URL (IPv6 without brackets).
    pub fn host(&self) -> String {
        match self.url().host() {
            Some(url::Host::Ipv6(a)) => a.to_string(),
            Some(h) => h.to_string(),
            None => String::new(),
        }
    }

    /// Port, with the scheme default filled in.
    pub fn port(&self) -> u16 {
        self.url().port_or_known_default().unwrap_or(443)
    }

    pub fn is_tls(&self) -> bool {
        self.0.starts_with("wss:")
    }

    /// Same relay regardless of `ws`/`wss`: host, explicit port and path compared exactly.
    pub fn same_endpoint(&self, other: &RelayUrl) -> bool {
        self.endpoint_key() == other.endpoint_key()
    }

    /// Host, explicit (non-default) port and path without the trailing slash, read off the
    /// normal form without parsing again (announcements carry many URLs, each compared with
    /// our own).
    fn endpoint_key(&self) -> &str {
        let rest = self.0.split_once("://").map_or(self.0.as_str(), |(_, r)| r);
        let rest = rest.split_once('?').map_or(rest, |(r, _)| r);
        rest.trim_end_matches('/')
    }

    /// Classifies the host when it is an address literal or a well-known local name.
    pub fn address_class(&self) -> AddressClass {
        classify_host(&self.host())
    }
}

impl fmt::Display for RelayUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for RelayUrl {
    type Error = UrlError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        RelayUrl::parse(&s)
    }
}

impl From<RelayUrl> for String {
    fn from(u: RelayUrl) -> String {
        u.0
    }
}

/// Lower-cased host of an http(s)/ws(s)/git URL, for `clone` matching.
pub fn url_host(input: &str) -> Option<String> {
    let url = url::Url::parse(input.trim()).ok()?;
    let host = url.host_str()?.trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

/// What kind of address a host names, as far as can be told without DNS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// A public address literal or a DNS name that is not obviously local.
    Public,
    Loopback,
    Private,
    LinkLocal,
    Multicast,
    /// Unspecified, broadcast, documentation or reserved ranges: never dialled.
    Reserved,
}

impl AddressClass {
    pub fn is_public(self) -> bool {
        self == AddressClass::Public
    }
}

/// Classifies a host name or address literal.
pub fn classify_host(host: &str) -> AddressClass {
    let h = host.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.');
    let lower = h.to_ascii_lowercase();
    if lower == "localhost" || lower.ends_with(".localhost") {
        return AddressClass::Loopback;
    }
    if lower.ends_with(".local") || lower.ends_with(".internal") || lower.ends_with(".lan") {
        return AddressClass::Private;
    }
    match lower.parse::<IpAddr>() {
        Ok(ip) => classify_ip(ip),
        Err(_) => AddressClass::Public,
    }
}

/// Classifies an IP address (used again after DNS resolution).
pub fn classify_ip(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let o = ip.octets();
    if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64) {
        // RFC 1918 and carrier-grade NAT (100.64.0.0/10).
        AddressClass::Private
    } else if ip.is_link_local() {
        AddressClass::LinkLocal
    } else if ip.is_multicast() {
        AddressClass::Multicast
    } else if ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_documentation()
        || o[0] == 0
        || o[0] >= 240
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
    {
        AddressClass::Reserved
    } else {
        AddressClass::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let seg0 = ip.segments()[0];
    if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_unspecified() || seg0 == 0x2001 && ip.segments()[1] == 0x0db8 {
        AddressClass::Reserved
    } else if ip.is_multicast() {
        AddressClass::Multicast
    } else if (seg0 & 0xffc0) == 0xfe80 {
        AddressClass::LinkLocal
    } else if (seg0 & 0xfe00) == 0xfc00 || (seg0 & 0xffc0) == 0xfec0 {
        AddressClass::Private
    } else {
        AddressClass::Public
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        RelayUrl::parse(s).unwrap().to_string()
    }

    #[test]
    fn normalises_case_default_port_and_trailing_slash() {
        assert_eq!(n("WSS://Relay.Example.COM:443/"), "wss://relay.example.com");
        assert_eq!(n("ws://relay.example.com:80"), "ws://relay.example.com");
        assert_eq!(n("wss://relay.example.com:8443/"), "wss://relay.example.com:8443");
        assert_eq!(n("  wss://relay.example.com/nostr/ "), "wss://relay.example.com/nostr");
        assert_eq!(n("wss://relay.example.com.#frag"), "wss://relay.example.com");
    }

    #[test]
    fn refuses_non_websocket_schemes_and_garbage() {
        assert!(matches!(RelayUrl::parse("https://relay.example.com"), Err(UrlError::Scheme(_))));
        assert!(matches!(RelayUrl::parse("relay.example.com"), Err(UrlError::Parse(_))));
        assert!(RelayUrl::parse("wss://").is_err());
        assert!(matches!(RelayUrl::parse("wss://u:p@relay.example.com"), Err(UrlError::Credentials)));
        let long = format!("wss://{}.com", "a".repeat(600));
        assert_eq!(RelayUrl::parse(&long), Err(UrlError::TooLong));
    }

    #[test]
    fn same_endpoint_is_exact_host_never_substring() {
        let s = RelayUrl::parse("wss://grasp.example.com").unwrap();
        for other in ["wss://grasp.example.com/", "ws://grasp.example.com", "WSS://GRASP.example.com:443"] {
            assert!(s.same_endpoint(&RelayUrl::parse(other).unwrap()), "{other}");
        }
        for other in [
            "wss://grasp.example.com.evil.org",
            "wss://evilgrasp.example.com",
            "wss://grasp.example.com:8443",
            "wss://grasp.example.com/other",
        ] {
            assert!(!s.same_endpoint(&RelayUrl::parse(other).unwrap()), "{other}");
        }
    }

    proptest::proptest! {
        /// Reading the endpoint off the normal form agrees with comparing parsed host, port and
        /// path.
        #[test]
        fn same_endpoint_agrees_with_parsed_parts(
            a in (0usize..2, 0usize..3, 0usize..4, 0usize..5, 0usize..2),
            b in (0usize..2, 0usize..3, 0usize..4, 0usize..5, 0usize..2),
        ) {
            let make = |(s, h, p, path, q): (usize, usize, usize, usize, usize)| {
                let scheme = ["ws", "wss"][s];
                let host = ["grasp.example.com", "GRASP.Example.com.", "[::1]"][h];
                let port = ["", ":80", ":443", ":7777"][p];
                let path = ["", "/", "/a", "/a/", "/A"][path];
                let query = ["", "?x=1"][q];
                RelayUrl::parse(&format!("{scheme}://{host}{port}{path}{query}")).unwrap()
            };
            let (a, b) = (make(a), make(b));
            let (ua, ub) = (a.url(), b.url());
            let parts = |u: &url::Url| (u.host_str().map(str::to_string), u.port(), u.path().trim_end_matches('/').to_string());
            proptest::prop_assert_eq!(a.same_endpoint(&b), parts(&ua) == parts(&ub), "{} {}", a, b);
        }
    }

    #[test]
    fn classifies_local_and_private_hosts() {
        use AddressClass::*;
        let cases = [
            ("wss://127.0.0.1:7777", Loopback),
            ("wss://localhost", Loopback),
            ("wss://[::1]", Loopback),
            ("wss://10.1.2.3", Private),
            ("wss://192.168.0.10", Private),
            ("wss://172.20.0.1", Private),
            ("wss://100.64.1.1", Private),
            ("wss://[fd00::1]", Private),
            ("wss://169.254.169.254", LinkLocal),
            ("wss://[fe80::1]", LinkLocal),
            ("wss://224.0.0.1", Multicast),
            ("wss://0.0.0.0", Reserved),
            ("wss://[::ffff:10.0.0.1]", Private),
            ("wss://printer.local", Private),
            ("wss://relay.example.com", Public),
            ("wss://8.8.8.8", Public),
        ];
        for (u, class) in cases {
            assert_eq!(RelayUrl::parse(u).unwrap().address_class(), class, "{u}");
        }
    }

    #[test]
    fn clone_host_is_lower_case() {
        assert_eq!(url_host("https://Git.Example.com/x.git").as_deref(), Some("git.example.com"));
        assert_eq!(url_host("not a url"), None);
    }

    #[test]
    fn a_url_whose_normal_form_grows_past_the_limit_is_too_long() {
        let input = format!("wss://relay.example.com/{}", "\u{8e}".repeat(100));
        assert!(input.len() <= MAX_URL_LEN);
        assert_eq!(RelayUrl::parse(&input), Err(UrlError::TooLong));
    }

    #[test]
    fn a_host_that_reads_differently_without_its_trailing_dots_is_normalised_once_more() {
        let once = RelayUrl::parse("wss://127.0.0..").unwrap();
        assert_eq!(once.as_str(), "wss://127.0.0.0");
        assert_eq!(RelayUrl::parse(once.as_str()).unwrap(), once);
    }

    #[test]
    fn invalid_punycode_host_is_an_error_not_a_panic() {
        assert!(matches!(RelayUrl::parse("wss://xn--.aa"), Err(UrlError::Parse(_))));
    }

    proptest::proptest! {
        #[test]
        fn normalisation_is_idempotent(host in "[a-z][a-z0-9-]{0,20}(\\.[a-z]{2,6}){1,2}",
                                       port in proptest::option::of(1u16..),
                                       path in "(/[a-z0-9]{0,8}){0,3}/?",
                                       upper in proptest::bool::ANY) {
            // "xn--" starts a punycode label; random text after it is not valid IDNA.
            proptest::prop_assume!(!host.starts_with("xn--"));
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let mut raw = format!("wss://{host}{port}{path}");
            if upper { raw = raw.to_uppercase(); }
            let once = RelayUrl::parse(&raw).unwrap();
            let twice = RelayUrl::parse(once.as_str()).unwrap();
            proptest::prop_assert_eq!(&once, &twice);
            proptest::prop_assert!(!once.as_str().ends_with('/'));
        }
    }
}
