//! Who is at the other end of a connection: the peer address the server
//! puts on every request (`PeerAddr`), and the client address a request is
//! counted by (`client_ip`), which is the peer unless the peer is a
//! configured reverse proxy (`SWITCHYARD_TRUSTED_PROXIES`), whose
//! `X-Forwarded-For` then names the client.

use std::net::{IpAddr, SocketAddr};

use axum::http::request::Parts;

/// The socket address of the connection a request came on, put into its
/// extensions by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// Reverse proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<ipnet::IpNet>);

impl TrustedProxies {
    /// Parses `10.0.0.0/8, 127.0.0.1, ::1` (addresses or CIDR ranges).
    pub fn parse(list: &str) -> Result<TrustedProxies, String> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("{s:?} is neither an IP address nor a CIDR range"))
            })
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }
}

/// An IPv4 address carried in IPv6 (`::ffff:a.b.c.d`) as the IPv4 one, so
/// that a client counts once however the socket reports it.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The client address of a request: the peer's, or, when the peer is a
/// trusted proxy, the right-most `X-Forwarded-For` entry that is not one
/// (entries left of it were written by the client and prove nothing).
/// `None` when the server did not record a peer (in-process calls).
pub fn client_ip(parts: &Parts, trusted: &TrustedProxies) -> Option<IpAddr> {
    let peer = canonical(parts.extensions.get::<PeerAddr>()?.0.ip());
    if !trusted.trusts(peer) {
        return Some(peer);
    }
    let mut client = peer;
    let hops = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in hops.into_iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = canonical(ip);
                if !trusted.trusts(client) {
                    break;
                }
            }
            // A hop we cannot read: the last one we could is the client.
            Err(_) => break,
        }
    }
    Some(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(peer: &str, xff: &[&str]) -> Parts {
        let mut b = axum::http::Request::builder().uri("/");
        for h in xff {
            b = b.header("x-forwarded-for", *h);
        }
        let (mut p, _) = b.body(()).expect("request").into_parts();
        p.extensions
            .insert(PeerAddr(peer.parse().expect("socket address")));
        p
    }

    #[test]
    fn peer_unless_a_trusted_proxy() {
        let none = TrustedProxies::default();
        let ip = |s: &str| Some(s.parse::<IpAddr>().expect("address"));
        assert_eq!(
            client_ip(&parts("1.2.3.4:5", &["9.9.9.9"]), &none),
            ip("1.2.3.4")
        );
        let t = TrustedProxies::parse("10.0.0.0/8, 127.0.0.1").expect("valid list");
        assert_eq!(
            client_ip(&parts("10.1.1.1:5", &["9.9.9.9"]), &t),
            ip("9.9.9.9")
        );
        // A client's own X-Forwarded-For is left of what the proxy appends.
        assert_eq!(
            client_ip(&parts("10.1.1.1:5", &["6.6.6.6, 9.9.9.9"]), &t),
            ip("9.9.9.9")
        );
        assert_eq!(
            client_ip(&parts("127.0.0.1:5", &["9.9.9.9", "10.2.2.2"]), &t),
            ip("9.9.9.9")
        );
        assert_eq!(client_ip(&parts("10.1.1.1:5", &[]), &t), ip("10.1.1.1"));
        assert_eq!(
            client_ip(&parts("[::ffff:1.2.3.4]:5", &[]), &none),
            ip("1.2.3.4")
        );
        assert!(TrustedProxies::parse("nope").is_err());
    }
}
