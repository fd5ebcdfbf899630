//! What upstream mode learns before it loads anything: where the API server is (from
//! `--upstream`), who the token is (a SelfSubjectReview), which audiences it carries
//! (its `aud` claim, so that kgate verifies it locally whatever the cluster's
//! `--api-audiences`), and whether the path answers it at all.
//!
//! Not here: verifying the token (the API server does, answering the review; kgate
//! does, in the agent).

use anyhow::{Context as _, bail};
use base64::Engine as _;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::client::Target;

/// `--upstream`, taken apart.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Server {
    /// The host as written, without brackets for an IPv6 address: the name its
    /// certificate is checked against.
    pub host: String,
    pub port: u16,
    /// `host:port` (IPv6 in brackets).
    pub authority: String,
}

/// `https://HOST[:PORT][/]`; the port defaults to 443.
pub(super) fn parse_server(url: &str) -> anyhow::Result<Server> {
    let rest = url
        .strip_prefix("https://")
        .with_context(|| format!("--upstream {url:?}: not an https:// URL"))?
        .trim_end_matches('/');
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        bail!("--upstream {url:?}: expected https://HOST[:PORT], without a path");
    }
    let (host, port) = match rest.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6
                .split_once(']')
                .with_context(|| format!("--upstream {url:?}: unclosed ["))?;
            (host, after.strip_prefix(':'))
        }
        None => match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        },
    };
    let port = match port {
        Some(p) => p
            .parse()
            .with_context(|| format!("--upstream {url:?}: port {p:?}"))?,
        None => 443,
    };
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Ok(Server {
        host: host.to_owned(),
        port,
        authority,
    })
}

/// The audiences of a JWT (its `aud`, a string or a list), read without verifying
/// anything; empty when the token is not a JWT or carries none.
pub(super) fn audiences(token: &str) -> Vec<String> {
    let claims = token
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    match claims.as_ref().map(|c| &c["aud"]) {
        Some(Value::String(aud)) => vec![aud.clone()],
        Some(Value::Array(auds)) => auds
            .iter()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// The `message` of a Kubernetes Status, or the body's start.
fn message(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned())
}

/// The token's username, as the API server sees it: a SelfSubjectReview
/// (`POST /apis/authentication.k8s.io/v1/selfsubjectreviews`, GA in Kubernetes 1.28;
/// every authenticated user may create one through `system:basic-user`).
pub(super) async fn whoami(direct: &Target, token: &str) -> anyhow::Result<String> {
    let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    let path = "/apis/authentication.k8s.io/v1/selfsubjectreviews";
    let (status, body) = crate::client::once(direct, Method::POST, path, token, Some(review))
        .await
        .context("asking the API server who the token is")?;
    match status {
        StatusCode::OK | StatusCode::CREATED => {}
        StatusCode::UNAUTHORIZED => bail!(
            "the API server does not accept the token (401): {}",
            message(&body)
        ),
        _ => bail!(
            "cannot ask the API server who the token is (SelfSubjectReview, Kubernetes 1.28+): {status}: {}",
            message(&body)
        ),
    }
    let review: Value = serde_json::from_slice(&body).context("the SelfSubjectReview answer")?;
    review["status"]["userInfo"]["username"]
        .as_str()
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .with_context(|| format!("the SelfSubjectReview names no user: {review}"))
}

/// Fails, saying why, unless `target` answers a GET of `path` with 200.
pub(super) async fn check_path(
    target: &Target,
    path: &str,
    token: &str,
    user: &str,
) -> anyhow::Result<()> {
    let (status, body) = crate::client::once(target, Method::GET, path, token, None).await?;
    if status != StatusCode::OK {
        bail!(
            "GET {path} {} as {user} answered {status}: {}. --path must name something the token may GET \
             (the default, /version, is open to every authenticated user)",
            if target.via == "direct" {
                "directly"
            } else {
                target.via
            },
            message(&body)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls() {
        let ok = |url: &str, host: &str, port: u16, authority: &str| {
            assert_eq!(
                parse_server(url).unwrap(),
                Server {
                    host: host.into(),
                    port,
                    authority: authority.into()
                },
                "{url}"
            );
        };
        ok(
            "https://api.example.com",
            "api.example.com",
            443,
            "api.example.com:443",
        );
        ok(
            "https://api.example.com:6443/",
            "api.example.com",
            6443,
            "api.example.com:6443",
        );
        ok("https://10.0.0.1:6443", "10.0.0.1", 6443, "10.0.0.1:6443");
        ok("https://[fd00::1]:6443", "fd00::1", 6443, "[fd00::1]:6443");
        ok("https://[fd00::1]", "fd00::1", 443, "[fd00::1]:443");
        for bad in [
            "http://api:6443",
            "api:6443",
            "https://",
            "https://api:6443/api",
            "https://api:x",
            "https://u@api",
            "https://[fd00::1",
        ] {
            assert!(parse_server(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn audiences_of_a_token() {
        let jwt = |claims: Value| {
            let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
            format!(
                "{}.{}.sig",
                b64(br#"{"alg":"ES256"}"#),
                b64(claims.to_string().as_bytes())
            )
        };
        let cases = [
            (
                jwt(json!({"aud": "https://kubernetes.default.svc"})),
                vec!["https://kubernetes.default.svc"],
            ),
            (jwt(json!({"aud": ["a", "b"]})), vec!["a", "b"]),
            (jwt(json!({"sub": "x"})), vec![]),
            ("not-a-jwt".to_owned(), vec![]),
            ("a.!!!.c".to_owned(), vec![]),
        ];
        for (token, want) in cases {
            assert_eq!(audiences(&token), want, "{token}");
        }
    }

    #[test]
    fn a_status_message_or_the_body() {
        assert_eq!(message(br#"{"kind":"Status","message":"no"}"#), "no");
        assert_eq!(message(b"plain"), "plain");
    }
}
