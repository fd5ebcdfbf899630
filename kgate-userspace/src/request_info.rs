//! Kubernetes authorization attributes from a request's method and URL, derived by the
//! API server's own rules (k8s.io/apiserver `RequestInfoFactory`), so that what kgate
//! authorizes is exactly what the API server will act on.
//!
//! - `/api/VERSION/…` (core group) and `/apis/GROUP/VERSION/…` are resource requests;
//!   everything else (`/version`, `/healthz`, `/apis`, `/apis/GROUP`, `/openapi/…`)
//!   is a non-resource request whose verb is the lowercased method.
//! - Verbs: POST create, GET/HEAD get, PUT update, PATCH patch, DELETE delete; a get
//!   without a name is list, or watch with a true `watch` parameter; a delete without
//!   a name is deletecollection. The `/watch/` and `/proxy/` path prefixes are verbs.
//! - `namespaces/NS/RESOURCE/…` sets the namespace; `namespaces/NAME` and its
//!   `status`/`finalize` subresources are the namespace object itself.
//! - A list or watch whose field selector requires `metadata.name=X` is about X.
//!
//! The path is percent-decoded before it is split, as Go's `URL.Path` is; a path that
//! does not decode is an error, never a guess.

use http::{Method, Uri};
use serde::Serialize;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestInfo {
    pub is_resource_request: bool,
    /// The decoded path.
    pub path: String,
    pub verb: String,
    pub api_prefix: String,
    pub api_group: String,
    pub api_version: String,
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    /// The path segments from the resource on.
    pub parts: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestInfoError {
    #[error("the path {0:?} does not start with /")]
    NotAbsolute(String),
    #[error("the path {0:?} has an invalid percent-encoding")]
    BadEncoding(String),
    #[error("unable to determine kind and namespace from {0:?}")]
    NoResource(String),
}

const API_PREFIXES: [&str; 2] = ["api", "apis"];
/// Subresources of the namespace object itself, not resources inside it.
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

impl RequestInfo {
    pub fn parse(method: &Method, uri: &Uri) -> Result<Self, RequestInfoError> {
        let raw = uri.path();
        if !raw.starts_with('/') {
            return Err(RequestInfoError::NotAbsolute(raw.to_owned()));
        }
        let path =
            percent_decode(raw).ok_or_else(|| RequestInfoError::BadEncoding(raw.to_owned()))?;
        let mut info = Self {
            path: path.clone(),
            verb: method.as_str().to_ascii_lowercase(),
            ..Self::default()
        };

        let trimmed = path.trim_matches('/');
        let mut parts: Vec<&str> = if trimmed.is_empty() {
            Vec::new()
        } else {
            trimmed.split('/').collect()
        };
        if parts.len() < 3 || !API_PREFIXES.contains(&parts[0]) {
            return Ok(info);
        }
        info.api_prefix = parts.remove(0).to_owned();
        if info.api_prefix == "apis" {
            // /apis/GROUP/VERSION alone is discovery: needs a resource after it.
            if parts.len() < 3 {
                return Ok(info);
            }
            info.api_group = parts.remove(0).to_owned();
        }
        info.is_resource_request = true;
        info.api_version = parts.remove(0).to_owned();

        if parts[0] == "watch" || parts[0] == "proxy" {
            if parts.len() < 2 {
                return Err(RequestInfoError::NoResource(path));
            }
            info.verb = parts.remove(0).to_owned();
        } else {
            info.verb = match *method {
                Method::POST => "create",
                Method::GET | Method::HEAD => "get",
                Method::PUT => "update",
                Method::PATCH => "patch",
                Method::DELETE => "delete",
                _ => "",
            }
            .to_owned();
        }

        if parts[0] == "namespaces" && parts.len() > 1 {
            info.namespace = parts[1].to_owned();
            if parts.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&parts[2]) {
                parts.drain(..2);
            }
        }
        info.parts = parts.iter().map(|p| (*p).to_owned()).collect();
        // proxy takes no subresource: what follows the name is the proxied path.
        if parts.len() >= 3 && info.verb != "proxy" {
            info.subresource = parts[2].to_owned();
        }
        if parts.len() >= 2 {
            info.name = parts[1].to_owned();
        }
        info.resource = parts[0].to_owned();

        if info.name.is_empty() && info.verb == "get" {
            let query = Query::parse(uri.query().unwrap_or_default());
            info.verb = if query.watch { "watch" } else { "list" }.to_owned();
            if let Some(name) = query.name_selector.filter(|n| valid_path_segment_name(n)) {
                info.name = name;
            }
        }
        if info.name.is_empty() && info.verb == "delete" {
            info.verb = "deletecollection".to_owned();
        }
        // A patch of a namespace object is not inside that namespace (server-side apply
        // may be creating it); the API server reports no namespace for it.
        if info.verb == "patch" && info.resource == "namespaces" && info.subresource.is_empty() {
            info.namespace.clear();
        }
        Ok(info)
    }

    /// Whether the API server treats the request as long-running (no request timeout):
    /// watch and proxy verbs, and the attach, exec, log, portforward and proxy
    /// subresources.
    pub fn is_long_running(&self) -> bool {
        matches!(self.verb.as_str(), "watch" | "proxy")
            || matches!(
                self.subresource.as_str(),
                "attach" | "exec" | "log" | "portforward" | "proxy"
            )
    }
}

/// The list options that change the attributes: `watch` and a `metadata.name` field
/// selector. When the options do not decode, the API server falls back to the raw
/// `watch` value and no name, and so does this.
struct Query {
    watch: bool,
    name_selector: Option<String>,
}

impl Query {
    fn parse(query: &str) -> Self {
        let pairs: Vec<(String, String)> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                let decode = |s: &str| percent_decode(&s.replace('+', " "));
                (decode(k).unwrap_or_default(), decode(v).unwrap_or_default())
            })
            .collect();
        let first = |key: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let watch = first("watch")
            .is_some_and(|v| !matches!(v.to_ascii_lowercase().as_str(), "false" | "0"));
        let numbers_ok = ["limit", "timeoutSeconds"]
            .iter()
            .all(|k| first(k).is_none_or(|v| v.parse::<i64>().is_ok()));
        let selector = first("fieldSelector").map(parse_field_selector);
        let name_selector = match selector {
            Some(None) => {
                return Self {
                    watch,
                    name_selector: None,
                };
            }
            Some(Some(terms)) if numbers_ok => terms
                .into_iter()
                .find(|(k, _)| k == "metadata.name")
                .map(|(_, v)| v),
            _ => None,
        };
        Self {
            watch,
            name_selector,
        }
    }
}

/// The exact-match terms (`k=v`, `k==v`) of a field selector; `None` if it does not
/// parse. `!=` terms parse but match nothing exactly. Backslash escapes `,`, `=`, `!`.
fn parse_field_selector(selector: &str) -> Option<Vec<(String, String)>> {
    let mut terms = Vec::new();
    for term in split_unescaped(selector, ',') {
        if term.is_empty() {
            continue;
        }
        let (key, op, value) = split_operator(&term)?;
        if key.is_empty() {
            return None;
        }
        if op != "!=" {
            terms.push((key, unescape(&value)));
        }
    }
    Some(terms)
}

fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let (mut out, mut cur, mut escaped) = (Vec::new(), String::new(), false);
    for c in s.chars() {
        if escaped {
            cur.push('\\');
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    if escaped {
        cur.push('\\');
    }
    out.push(cur);
    out
}

/// Finds the first unescaped `!=`, `==` or `=` in a term.
fn split_operator(term: &str) -> Option<(String, &'static str, String)> {
    let bytes = term.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'!' if bytes.get(i + 1) == Some(&b'=') => {
                return Some((term[..i].trim().to_owned(), "!=", term[i + 2..].to_owned()));
            }
            b'=' if bytes.get(i + 1) == Some(&b'=') => {
                return Some((term[..i].trim().to_owned(), "==", term[i + 2..].to_owned()));
            }
            b'=' => return Some((term[..i].trim().to_owned(), "=", term[i + 1..].to_owned())),
            _ => i += 1,
        }
    }
    None
}

fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A name that can stand in a URL path segment (apimachinery `IsValidPathSegmentName`).
fn valid_path_segment_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('%')
}

/// Percent-decodes; `None` on a malformed escape or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hi = (hex[0] as char).to_digit(16)?;
            let lo = (hex[1] as char).to_digit(16)?;
            out.push(u8::try_from(hi * 16 + lo).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests;
