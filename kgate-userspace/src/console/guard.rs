//! The console's protections, in the spirit of `kubectl port-forward`: what the
//! console may bind to, and which requests it answers. Pure functions over the
//! request's headers, so the rules are tested without a socket.
//!
//! - On a loopback address, anyone on the machine can connect, and a web page in any
//!   browser there can make requests to it: so the `Host` header must name the listen
//!   address or `localhost` (a DNS-rebinding page sends its own host name), and every
//!   request that changes something must come from the console's own origin (`Origin`)
//!   and carry the per-process CSRF token the page embeds.
//! - Any other address requires TLS and each viewer's own bearer token
//!   ([`super::viewer`]); the same origin and CSRF rules apply to changes.
//!
//! Not here: authentication and authorization, which are the API server's (the
//! console acts with the kubeconfig's credentials on loopback, the viewer's otherwise).

use std::net::SocketAddr;

use http::{HeaderMap, Method, header};

/// The header a page sends its CSRF token in.
pub(crate) const CSRF_HEADER: &str = "x-kgate-csrf";

/// Who can reach the console, by the address it listens on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exposure {
    /// This machine only: the kubeconfig's credentials serve every request.
    Loopback,
    /// The network: TLS, and each viewer signs in with a token of their own.
    Remote,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum GuardError {
    #[error(
        "--listen {0}: not a loopback address, so the console needs --tls-cert and --tls-key \
         (viewers then sign in with their own bearer token)"
    )]
    RemoteWithoutTls(SocketAddr),
}

/// Why a request was refused before it was served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    #[error(
        "Host {0:?} is not this console's address: a loopback console answers only to \
         localhost and its listen address (DNS rebinding)"
    )]
    ForeignHost(String),
    #[error("a change must come from the console's own page (Origin {0:?})")]
    CrossOrigin(String),
    #[error("missing or wrong CSRF token (reload the console's page)")]
    Csrf,
}

/// Where `listen` exposes the console, and whether that is allowed with `tls`.
pub(crate) fn exposure(listen: SocketAddr, tls: bool) -> Result<Exposure, GuardError> {
    match (listen.ip().is_loopback(), tls) {
        (true, _) => Ok(Exposure::Loopback),
        (false, true) => Ok(Exposure::Remote),
        (false, false) => Err(GuardError::RemoteWithoutTls(listen)),
    }
}

/// What a request must satisfy before it is routed.
pub(crate) struct Rules<'a> {
    pub exposure: Exposure,
    /// The bound address (its port when `--listen` asked for port 0).
    pub bound: SocketAddr,
    /// `http` or `https`.
    pub scheme: &'static str,
    pub csrf: &'a str,
}

impl Rules<'_> {
    /// Refuses a request whose `Host` is foreign (loopback only), or a change (any
    /// method but GET and HEAD) without the console's origin and CSRF token.
    pub(crate) fn check(&self, method: &Method, headers: &HeaderMap) -> Result<(), Refusal> {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if self.exposure == Exposure::Loopback && !self.loopback_host(host) {
            return Err(Refusal::ForeignHost(host.to_owned()));
        }
        if method == Method::GET || method == Method::HEAD {
            return Ok(());
        }
        // Browsers send Origin with every POST (fetch included); a change without one
        // is not from a page of ours.
        let origin = headers
            .get(header::ORIGIN)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if host.is_empty() || origin != format!("{}://{host}", self.scheme) {
            return Err(Refusal::CrossOrigin(origin.to_owned()));
        }
        let sent = headers
            .get(CSRF_HEADER)
            .map_or(&b""[..], http::HeaderValue::as_bytes);
        if !constant_time_eq(sent, self.csrf.as_bytes()) {
            return Err(Refusal::Csrf);
        }
        Ok(())
    }

    /// `localhost`, `127.0.0.1`, `[::1]` or the bound address, with the bound port.
    fn loopback_host(&self, host: &str) -> bool {
        let port = self.bound.port();
        let names = [
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
            format!("[::1]:{port}"),
            self.bound.to_string(),
        ];
        names.iter().any(|n| n.eq_ignore_ascii_case(host))
    }
}

/// Compares without an early exit, so timing does not tell how much of a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(exposure: Exposure) -> Rules<'static> {
        Rules {
            exposure,
            bound: "127.0.0.1:8080".parse().unwrap(),
            scheme: "http",
            csrf: "s3cret",
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn binding_elsewhere_than_loopback_needs_tls() {
        let cases: &[(&str, bool, Result<Exposure, GuardError>)] = &[
            ("127.0.0.1:8080", false, Ok(Exposure::Loopback)),
            ("[::1]:8080", false, Ok(Exposure::Loopback)),
            ("127.0.0.1:8080", true, Ok(Exposure::Loopback)),
            ("0.0.0.0:8080", true, Ok(Exposure::Remote)),
            (
                "0.0.0.0:8080",
                false,
                Err(GuardError::RemoteWithoutTls(
                    "0.0.0.0:8080".parse().unwrap(),
                )),
            ),
            (
                "10.1.2.3:443",
                false,
                Err(GuardError::RemoteWithoutTls(
                    "10.1.2.3:443".parse().unwrap(),
                )),
            ),
        ];
        for (listen, tls, want) in cases {
            assert_eq!(
                &exposure(listen.parse().unwrap(), *tls),
                want,
                "{listen} tls={tls}"
            );
        }
    }

    #[test]
    fn requests_are_checked_for_host_origin_and_csrf() {
        let ok = Ok(());
        type Case = (
            Exposure,
            Method,
            Vec<(&'static str, &'static str)>,
            Result<(), Refusal>,
        );
        let cases: Vec<Case> = vec![
            (
                Exposure::Loopback,
                Method::GET,
                vec![("host", "localhost:8080")],
                ok.clone(),
            ),
            (
                Exposure::Loopback,
                Method::GET,
                vec![("host", "127.0.0.1:8080")],
                ok.clone(),
            ),
            (
                Exposure::Loopback,
                Method::GET,
                vec![("host", "[::1]:8080")],
                ok.clone(),
            ),
            (
                Exposure::Loopback,
                Method::GET,
                vec![("host", "evil.example:8080")],
                Err(Refusal::ForeignHost("evil.example:8080".into())),
            ),
            (
                Exposure::Loopback,
                Method::GET,
                vec![("host", "localhost:9999")],
                Err(Refusal::ForeignHost("localhost:9999".into())),
            ),
            (
                Exposure::Loopback,
                Method::GET,
                vec![],
                Err(Refusal::ForeignHost(String::new())),
            ),
            // Remote: any host name (the viewer's token guards it).
            (
                Exposure::Remote,
                Method::GET,
                vec![("host", "console.example")],
                ok.clone(),
            ),
            (
                Exposure::Loopback,
                Method::POST,
                vec![
                    ("host", "localhost:8080"),
                    ("origin", "http://localhost:8080"),
                    ("x-kgate-csrf", "s3cret"),
                ],
                ok.clone(),
            ),
            (
                Exposure::Loopback,
                Method::POST,
                vec![
                    ("host", "localhost:8080"),
                    ("origin", "http://localhost:8080"),
                ],
                Err(Refusal::Csrf),
            ),
            (
                Exposure::Loopback,
                Method::POST,
                vec![
                    ("host", "localhost:8080"),
                    ("origin", "http://localhost:8080"),
                    ("x-kgate-csrf", "s3cres"),
                ],
                Err(Refusal::Csrf),
            ),
            (
                Exposure::Loopback,
                Method::POST,
                vec![
                    ("host", "localhost:8080"),
                    ("origin", "http://evil.example"),
                    ("x-kgate-csrf", "s3cret"),
                ],
                Err(Refusal::CrossOrigin("http://evil.example".into())),
            ),
            (
                Exposure::Loopback,
                Method::DELETE,
                vec![("host", "localhost:8080"), ("x-kgate-csrf", "s3cret")],
                Err(Refusal::CrossOrigin(String::new())),
            ),
        ];
        for (exposure, method, h, want) in cases {
            assert_eq!(
                rules(exposure).check(&method, &headers(&h)),
                want,
                "{exposure:?} {method} {h:?}"
            );
        }
    }
}
