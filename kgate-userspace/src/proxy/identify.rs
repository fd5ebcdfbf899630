//! The **identify** stage: who is calling. Today that is what the kernel saw (pod
//! cgroup, process) and whether the request carries a bearer token; the token is passed
//! to the API server, which authenticates it.
//!
//! Not yet here: local verification of projected service-account tokens against the
//! API server's JWKS, TokenReview fallback, and the token ↔ pod binding check (the
//! workload identity issue). Until then kgate adds no trust of its own to a token.

use http::{HeaderMap, header::AUTHORIZATION};

use super::accept::Connection;

/// The caller as far as kgate knows it.
#[derive(Clone, Debug)]
pub struct Caller {
    pub conn: Connection,
    /// The request carries `Authorization: Bearer …`.
    pub bearer: bool,
}

pub fn identify(conn: &Connection, headers: &HeaderMap) -> Caller {
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer "));
    Caller {
        conn: conn.clone(),
        bearer,
    }
}
