//! Who may send `PURGE`: a bearer token, or a client address in an allow-list.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use http::header::AUTHORIZATION;
use http::Request;
use ipnet::IpNet;
use subtle::ConstantTimeEq;

/// An address or network that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an IP address or network; write e.g. 127.0.0.1, ::1 or 10.0.0.0/8")]
pub struct InvalidAddress(pub String);

/// The token and the networks allowed to purge. Nobody by default.
#[derive(Clone, Debug, Default)]
pub(super) struct PurgeAccess {
    token: Option<String>,
    networks: Vec<IpNet>,
}

impl PurgeAccess {
    pub(super) fn set_token(&mut self, token: String) {
        self.token = (!token.is_empty()).then_some(token);
    }

    pub(super) fn allow_from<I, S>(&mut self, addresses: I) -> Result<(), InvalidAddress>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for address in addresses {
            let text = address.as_ref().trim();
            let net = match text.parse::<IpNet>() {
                Ok(net) => net,
                Err(_) => text
                    .parse::<IpAddr>()
                    .map(IpNet::from)
                    .map_err(|_| InvalidAddress(text.to_owned()))?,
            };
            self.networks.push(net);
        }
        Ok(())
    }

    /// Whether the request may purge: the right token, or a connection from an allowed
    /// network (an IPv4 client seen as an IPv6-mapped address counts as IPv4).
    pub(super) fn allows<B>(&self, req: &Request<B>) -> bool {
        if let Some(token) = &self.token {
            let sent = req
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
            if sent.is_some_and(|sent| bool::from(sent.ct_eq(token.as_bytes()))) {
                return true;
            }
        }
        let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>() else {
            return false;
        };
        let ip = match peer.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        self.networks.iter().any(|net| net.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(auth: Option<&str>, peer: Option<&str>) -> Request<()> {
        let mut req = Request::builder().method("PURGE").uri("/x");
        if let Some(auth) = auth {
            req = req.header(AUTHORIZATION, auth);
        }
        let mut req = req.body(()).unwrap();
        if let Some(peer) = peer {
            req.extensions_mut()
                .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        }
        req
    }

    #[test]
    fn nobody_by_default_then_the_token_or_an_allowed_address() {
        let none = PurgeAccess::default();
        assert!(!none.allows(&request(Some("Bearer "), Some("127.0.0.1:1"))));
        let mut access = PurgeAccess::default();
        access.set_token("t0k".into());
        access.allow_from(["10.0.0.0/8", "::1"]).unwrap();
        assert!(access.allows(&request(Some("Bearer t0k"), None)));
        assert!(!access.allows(&request(Some("Bearer t0"), None)));
        assert!(!access.allows(&request(Some("bearer t0k"), Some("192.168.1.1:5"))));
        assert!(access.allows(&request(None, Some("10.1.2.3:80"))));
        assert!(access.allows(&request(None, Some("[::ffff:10.0.0.1]:80"))));
        assert!(access.allows(&request(None, Some("[::1]:80"))));
        assert!(!access.allows(&request(None, Some("11.0.0.1:80"))));
        let mut empty = PurgeAccess::default();
        empty.set_token(String::new());
        assert!(!empty.allows(&request(Some("Bearer "), None)));
        assert_eq!(
            PurgeAccess::default().allow_from(["localhost"]),
            Err(InvalidAddress("localhost".into()))
        );
    }
}
