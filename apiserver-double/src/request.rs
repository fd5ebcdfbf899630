//! A request as the handlers see it: read whole (at most [`MAX_BODY`], refused past
//! it the way Go's server refuses), its query parsed, its body decoded by Content-Type.
//!
//! Not here: authentication (authn.rs) and where the request goes (routing.rs).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;

use crate::{Body, protobuf, status};

/// The API server's request body limit (3 MiB).
const MAX_BODY: usize = 3 << 20;

/// A buffered request (upgrades keep their connection in `upgrade`).
pub struct Req {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub upgrade: Option<hyper::upgrade::OnUpgrade>,
    /// The authenticated user as an authentication.k8s.io/v1 UserInfo (null: anonymous).
    pub user: Value,
}

impl Req {
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn query_all(&self, key: &str) -> Vec<&str> {
        self.query
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body decoded by its Content-Type (JSON, YAML or Kubernetes protobuf, as the
    /// real server reads), or the 415/400 Status the real server answers.
    pub fn decode_body(&self) -> Result<Value, hyper::Response<Body>> {
        let media = self
            .header("content-type")
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim();
        let decoded = match media {
            "application/json" | "*/*" | "" => {
                serde_json::from_slice(&self.body).map_err(|e| e.to_string())
            }
            "application/yaml" => serde_yaml::from_slice(&self.body).map_err(|e| e.to_string()),
            "application/vnd.kubernetes.protobuf" => protobuf::decode(&self.body),
            other => {
                return Err(status(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    &format!(
                        "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (not {other})"
                    ),
                ));
            }
        };
        decoded.map_err(|e| {
            status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("the body of the request could not be decoded as {media}: {e}"),
            )
        })
    }

    pub fn accept(&self) -> String {
        self.header("accept").unwrap_or_default().to_owned()
    }
}

/// Reads a request body of at most [`MAX_BODY`] bytes. One over it is refused the
/// way Go's server refuses it: the answer goes out while the rest of the body is read
/// and discarded in the background for a while (Go's lingering close), then the
/// connection closes. Closing at once would reset the connection under the client's
/// unread answer.
pub(crate) async fn read_limited(mut body: hyper::body::Incoming) -> Result<Bytes, ()> {
    let mut read = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(drop)?.into_data() else {
            continue;
        };
        if read.len() + data.len() > MAX_BODY {
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    while let Some(Ok(_)) = body.frame().await {}
                })
                .await;
            });
            return Err(());
        }
        read.extend_from_slice(&data);
    }
    Ok(read.into())
}
