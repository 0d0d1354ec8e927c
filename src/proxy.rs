//! The client's address behind a reverse proxy (`[server] trusted_proxies`).
//!
//! Behind nginx every connection comes from nginx, so per-address limits
//! (`max_sessions_per_ip`) would cap the whole deployment and the session affinity check
//! would compare nginx with itself. When, and only when, the connection's peer is a trusted
//! proxy, the gateway takes the client address from what the proxy says: the `Forwarded`
//! header (RFC 7239 `for=`), else `X-Forwarded-For`, on HTTP; a PROXY protocol v1 or v2
//! header on the STOMP TCP listener. A header from an untrusted peer is ignored, since anyone
//! can write one.
//!
//! A chain (`client, proxy1, proxy2`) is read from the right: addresses of trusted proxies
//! are skipped and the first untrusted one is the client, so a client cannot choose its
//! address by sending its own `X-Forwarded-For` through a proxy that appends to it. An entry
//! that is not an address (`unknown`, an obfuscated name) ends the walk at the proxy that
//! wrote it.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http::HeaderMap;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// An address range, `192.168.0.0/16` or `::1/128` (a bare address is one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    /// The network address.
    addr: IpAddr,
    /// The prefix length.
    bits: u8,
}

impl IpNet {
    /// Parse `a.b.c.d/n`, `x::y/n` or a bare address.
    pub fn parse(text: &str) -> Result<IpNet, String> {
        let (addr, bits) = match text.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an address or CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            Some(b) => b
                .parse::<u8>()
                .ok()
                .filter(|&b| b <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
            None => max,
        };
        Ok(IpNet { addr, bits })
    }

    /// Whether `ip` is in the range (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The proxies whose word on the client address is taken.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    /// Their ranges; empty: trust nobody (the default).
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// Parse `[server] trusted_proxies`.
    pub fn parse(entries: &[String]) -> Result<TrustedProxies, String> {
        let nets = entries
            .iter()
            .map(|e| IpNet::parse(e))
            .collect::<Result<_, _>>()?;
        Ok(TrustedProxies { nets })
    }

    /// Whether `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(ip))
    }

    /// The client address of an HTTP request that arrived from `peer`.
    pub fn client_addr(&self, peer: SocketAddr, headers: &HeaderMap) -> SocketAddr {
        if !self.trusts(peer.ip()) {
            return peer;
        }
        let forwarded: Vec<&str> = headers
            .get_all("forwarded")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(forwarded_for)
            .collect();
        let chain: Vec<&str> = if !forwarded.is_empty() {
            forwarded
        } else {
            headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .collect()
        };
        let mut client = peer;
        for entry in chain.iter().rev() {
            let Some(addr) = parse_node(entry, peer.port()) else {
                break;
            };
            client = addr;
            if !self.trusts(addr.ip()) {
                break;
            }
        }
        client
    }
}

/// The `for=` value of one `Forwarded` element, unquoted.
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        name.eq_ignore_ascii_case("for")
            .then(|| value.trim().trim_matches('"'))
    })
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:80`, `[::1]`, `[::1]:80`, `::1`.
fn parse_node(text: &str, default_port: u16) -> Option<SocketAddr> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr);
    }
    let bare = text.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, default_port))
}

/// How long a trusted peer may take to send its PROXY header.
const PROXY_HEADER_TIME: Duration = Duration::from_secs(5);
/// The PROXY protocol v2 signature.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// Why a PROXY header was refused; the connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    /// The socket failed or the header did not arrive in time.
    #[error("reading the PROXY header failed: {0}")]
    Io(#[from] std::io::Error),
    /// The header is not PROXY protocol v1 or v2.
    #[error("malformed PROXY header: {0}")]
    Malformed(&'static str),
}

/// On a connection from a trusted proxy, read a PROXY protocol v1 or v2 header if the first
/// bytes are one, and return the client address it names (`peer` for `UNKNOWN`/`LOCAL`, or
/// when no header is sent). Reads exactly the header, nothing after it.
pub async fn read_proxy_header(
    stream: &mut TcpStream,
    peer: SocketAddr,
) -> Result<SocketAddr, ProxyHeaderError> {
    tokio::time::timeout(PROXY_HEADER_TIME, read_header(stream, peer))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

async fn read_header(
    stream: &mut TcpStream,
    peer: SocketAddr,
) -> Result<SocketAddr, ProxyHeaderError> {
    let mut first = [0u8; 12];
    let mut seen;
    // Peek until the bytes say whether a header is there (a STOMP client starts with a
    // command or an EOL, which differs from both signatures within the first bytes).
    loop {
        seen = stream.peek(&mut first).await?;
        if seen == 0 {
            return Ok(peer);
        }
        let v1 = b"PROXY ".starts_with(&first[..seen.min(6)]);
        let v2 = V2_SIGNATURE.starts_with(&first[..seen]);
        if !v1 && !v2 {
            return Ok(peer);
        }
        if (v1 && seen >= 6) || (v2 && seen == 12) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if first[..seen.min(6)] == *b"PROXY " {
        let mut line = Vec::with_capacity(108);
        while !line.ends_with(b"\r\n") {
            if line.len() >= 107 {
                return Err(ProxyHeaderError::Malformed("v1 line longer than 107 bytes"));
            }
            line.push(stream.read_u8().await?);
        }
        return parse_v1(&line[..line.len() - 2], peer);
    }
    let mut head = [0u8; 16];
    stream.read_exact(&mut head).await?;
    let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    parse_v2(head[12], head[13], &body, peer)
}

/// `PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222` (without CRLF).
pub fn parse_v1(line: &[u8], peer: SocketAddr) -> Result<SocketAddr, ProxyHeaderError> {
    let text =
        std::str::from_utf8(line).map_err(|_| ProxyHeaderError::Malformed("v1 not ASCII"))?;
    let parts: Vec<&str> = text.split(' ').collect();
    match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(peer),
        ["PROXY", "TCP4" | "TCP6", src, _dst, sport, _dport] => {
            let ip: IpAddr = src
                .parse()
                .map_err(|_| ProxyHeaderError::Malformed("v1 source address"))?;
            let port: u16 = sport
                .parse()
                .map_err(|_| ProxyHeaderError::Malformed("v1 source port"))?;
            Ok(SocketAddr::new(ip, port))
        }
        _ => Err(ProxyHeaderError::Malformed("v1 line")),
    }
}

/// The v2 header after the signature: version/command byte, family byte, address block.
pub fn parse_v2(
    ver_cmd: u8,
    family: u8,
    body: &[u8],
    peer: SocketAddr,
) -> Result<SocketAddr, ProxyHeaderError> {
    if ver_cmd >> 4 != 2 {
        return Err(ProxyHeaderError::Malformed("v2 version"));
    }
    match ver_cmd & 0x0f {
        0 => return Ok(peer),
        1 => {}
        _ => return Err(ProxyHeaderError::Malformed("v2 command")),
    }
    match family >> 4 {
        1 if body.len() >= 12 => {
            let ip = std::net::Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            Ok(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([body[8], body[9]]),
            ))
        }
        2 if body.len() >= 36 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&body[..16]);
            let ip = std::net::Ipv6Addr::from(octets);
            Ok(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([body[32], body[33]]),
            ))
        }
        0 => Ok(peer),
        _ => Err(ProxyHeaderError::Malformed("v2 address family or length")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn trusted() -> TrustedProxies {
        TrustedProxies::parse(&["127.0.0.1/32".into(), "10.0.0.0/8".into()]).unwrap()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn ranges_parse_and_match() {
        let net = IpNet::parse("10.1.0.0/16").unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(
            IpNet::parse("::1")
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        assert!(
            IpNet::parse("127.0.0.1")
                .unwrap()
                .contains("::ffff:127.0.0.1".parse().unwrap())
        );
        assert!(
            IpNet::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(IpNet::parse("1.2.3.4/33").is_err());
        assert!(IpNet::parse("nginx").is_err());
    }

    #[test]
    fn headers_count_only_from_a_trusted_peer() {
        let t = trusted();
        let h = headers(&[("x-forwarded-for", "203.0.113.9")]);
        let from_nginx: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let from_else: SocketAddr = "198.51.100.1:5000".parse().unwrap();
        assert_eq!(
            t.client_addr(from_nginx, &h).ip().to_string(),
            "203.0.113.9"
        );
        assert_eq!(t.client_addr(from_else, &h), from_else);
        assert_eq!(
            TrustedProxies::default().client_addr(from_nginx, &h),
            from_nginx
        );
    }

    #[test]
    fn chains_are_read_from_the_right() {
        let t = trusted();
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        // A client-supplied first entry is not believed: 192.0.2.7 is who reached the proxy.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 192.0.2.7, 10.0.0.2")]);
        assert_eq!(t.client_addr(peer, &h).ip().to_string(), "192.0.2.7");
        let h = headers(&[(
            "forwarded",
            "for=\"[2001:db8::1]:4711\";proto=https, for=10.0.0.3",
        )]);
        assert_eq!(t.client_addr(peer, &h).to_string(), "[2001:db8::1]:4711");
        let h = headers(&[
            ("forwarded", "for=unknown"),
            ("x-forwarded-for", "192.0.2.1"),
        ]);
        assert_eq!(t.client_addr(peer, &h), peer);
    }

    #[test]
    fn proxy_protocol_headers_parse() {
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(
            parse_v1(b"PROXY TCP4 192.0.2.1 127.0.0.1 5555 61613", peer).unwrap(),
            "192.0.2.1:5555".parse().unwrap()
        );
        assert_eq!(parse_v1(b"PROXY UNKNOWN", peer).unwrap(), peer);
        assert!(parse_v1(b"PROXY TCP4 x", peer).is_err());
        let body = [192, 0, 2, 1, 127, 0, 0, 1, 0x15, 0xb3, 0xf0, 0x0d];
        assert_eq!(
            parse_v2(0x21, 0x11, &body, peer).unwrap(),
            "192.0.2.1:5555".parse().unwrap()
        );
        assert_eq!(parse_v2(0x20, 0x00, &[], peer).unwrap(), peer);
        assert!(parse_v2(0x31, 0x11, &body, peer).is_err());
        assert!(parse_v2(0x21, 0x11, &body[..4], peer).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_headers_never_panic(line in proptest::collection::vec(any::<u8>(), 0..120),
                                         cmd in any::<u8>(), fam in any::<u8>()) {
            let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
            let _ = parse_v1(&line, peer);
            let _ = parse_v2(cmd, fam, &line, peer);
        }
    }
}
