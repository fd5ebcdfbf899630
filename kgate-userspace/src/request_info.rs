//! Kubernetes authorization attributes from a request's method and URL, derived by the
//! API server's own rules (k8s.io/apiserver `RequestInfoFactory.NewRequestInfo`), so
//! that what kgate authorizes is exactly what the API server will authorize.
//!
//! - `/api/VERSION/…` (core group) and `/apis/GROUP/VERSION/…` followed by at least one
//!   more segment are resource requests. Everything else (`/version`, `/healthz`,
//!   `/api`, `/api/v1`, `/apis`, `/apis/GROUP`, `/apis/GROUP/VERSION`, `/openapi/…`) is
//!   a non-resource request whose verb is the lowercased method.
//! - Verbs: POST create, GET/HEAD get, PUT update, PATCH patch, DELETE delete, any
//!   other method the empty verb. A get without a name is list, or watch when the
//!   `watch` parameter is anything but `false`/`0`; a delete without a name is
//!   deletecollection. The deprecated `/watch/` and `/proxy/` path prefixes set the verb.
//! - `namespaces/NS/RESOURCE/…` sets the namespace; `namespaces/NAME` and its `status`
//!   and `finalize` subresources are the namespace object itself, whose namespace is
//!   its own name (for every verb: the API server never adopted a PATCH exception).
//! - A list or watch whose options decode and whose field selector requires
//!   `metadata.name=X` is about X. When any list option fails to decode (a bad
//!   selector, a non-numeric `limit`), the API server drops the name but keeps `watch`.
//!
//! The path is percent-decoded before it is split, as Go's `URL.Path` is, so `%2F` in a
//! segment splits it. What Go would accept but Rust strings cannot hold (a path or query
//! value that decodes to invalid UTF-8) is an error here, never a lossy guess.
//!
//! Not here: deciding whether the attributes are allowed (policy), or whether the
//! resource exists (the API server answers that after authorization).

use compact_str::CompactString;
use http::{Method, Uri};
use serde::Serialize;

mod selectors;

/// What the API server's authorizer sees for one request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestInfo {
    pub is_resource_request: bool,
    /// The percent-decoded path.
    pub path: String,
    /// The Kubernetes verb of a resource request; the lowercased method otherwise.
    pub verb: CompactString,
    pub api_prefix: CompactString,
    pub api_group: CompactString,
    pub api_version: CompactString,
    pub namespace: CompactString,
    pub resource: CompactString,
    pub subresource: CompactString,
    pub name: CompactString,
    /// The path segments from the resource on (`pods`, `NAME`, `SUBRESOURCE`, …).
    pub parts: Vec<CompactString>,
    /// The raw `fieldSelector` of a list, watch or deletecollection, as the API server
    /// records it for selector authorization (`AuthorizeWithSelectors`); empty for
    /// other verbs and for verbs set by a `/watch/` path prefix.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub field_selector: String,
    /// The raw `labelSelector`, on the same terms as `field_selector`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub label_selector: String,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestInfoError {
    #[error("the request target {0:?} is not an absolute path")]
    PathNotAbsolute(String),
    #[error("the path {0:?} does not percent-decode to UTF-8")]
    PathNotDecodable(String),
    #[error("the query {0:?} has a selector that does not percent-decode to UTF-8")]
    QueryNotDecodable(String),
    /// The API server answers these (`/api/v1/watch`, `/apis/G/V/proxy`) with a 500.
    #[error("unable to determine kind and namespace from {0:?}")]
    SpecialVerbWithoutResource(String),
}

/// Path prefixes of API groups; the core group's has no group segment.
const API_PREFIXES: [&str; 2] = ["api", "apis"];
const GROUPLESS_API_PREFIX: &str = "api";
/// The verbs of resource requests, as the API server's `RequestInfoFactory` derives
/// them from the method and the path (a collection's GET is `list`, `?watch=true`
/// makes `watch`, a collection's DELETE `deletecollection`).
pub(crate) const RESOURCE_VERBS: [&str; 8] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];
/// Verbs no request path carries, which the API server's filters authorize on their own
/// (`impersonate`, asked by the impersonation filter for each identity acted as).
pub(crate) const FILTER_VERBS: [&str; 1] = ["impersonate"];
/// Verbs that a path segment can set, before the resource.
pub(crate) const SPECIAL_VERBS: [&str; 2] = ["proxy", "watch"];
/// The verbs of non-resource requests: the HTTP method, lowercase.
pub(crate) const NON_RESOURCE_VERBS: [&str; 7] =
    ["get", "post", "put", "patch", "delete", "head", "options"];
/// Subresources of a namespace object, as opposed to resources inside the namespace.
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];
/// The verbs whose selectors the API server passes to the authorizer.
const VERBS_WITH_SELECTORS: [&str; 3] = ["list", "watch", "deletecollection"];
const SELECTOR_KEYS: [&str; 2] = ["fieldSelector", "labelSelector"];
/// kube-apiserver's long-running request check (`BasicLongRunningRequestCheck`).
const LONG_RUNNING_VERBS: [&str; 2] = ["watch", "proxy"];
const LONG_RUNNING_SUBRESOURCES: [&str; 5] = ["attach", "exec", "proxy", "log", "portforward"];

// === impl RequestInfo ===

impl RequestInfo {
    pub fn parse(method: &Method, uri: &Uri) -> Result<Self, RequestInfoError> {
        let raw_path = uri.path();
        if !raw_path.starts_with('/') {
            return Err(RequestInfoError::PathNotAbsolute(raw_path.to_owned()));
        }
        let path = decode_bytes(raw_path, false)
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| RequestInfoError::PathNotDecodable(raw_path.to_owned()))?;
        let raw_query = uri.query().unwrap_or_default();
        let query = Query::parse(raw_query)
            .ok_or_else(|| RequestInfoError::QueryNotDecodable(raw_query.to_owned()))?;

        let mut info = Self {
            verb: method.as_str().into(),
            ..Self::default()
        };
        info.verb.make_ascii_lowercase();
        let trimmed = path.trim_matches('/');
        let segments: Vec<&str> = if trimmed.is_empty() {
            Vec::new()
        } else {
            trimmed.split('/').collect()
        };
        let resolved = info.resolve(method, &segments, &query);
        info.path = path;
        match resolved {
            Ok(()) => Ok(info),
            Err(()) => Err(RequestInfoError::SpecialVerbWithoutResource(info.path)),
        }
    }

    /// Whether the request provably changes nothing in the cluster: `get`, `list` and
    /// `watch` of resources other than the subresources that reach a pod or node
    /// (`exec`, `attach`, `portforward`, `proxy`), and GET or HEAD of non-resource
    /// paths. The caller also excludes protocol upgrades.
    pub(crate) fn changes_nothing(&self) -> bool {
        if self.is_resource_request {
            matches!(self.verb.as_str(), "get" | "list" | "watch")
                && !matches!(
                    self.subresource.as_str(),
                    "exec" | "attach" | "portforward" | "proxy"
                )
        } else {
            matches!(self.verb.as_str(), "get" | "head")
        }
    }

    /// Whether kube-apiserver exempts the request from its request timeout (and from
    /// max-in-flight accounting): watch and proxy verbs, the attach, exec, log,
    /// portforward and proxy subresources, and the profiler's non-resource paths.
    pub fn is_long_running(&self) -> bool {
        LONG_RUNNING_VERBS.contains(&self.verb.as_str())
            || (self.is_resource_request
                && LONG_RUNNING_SUBRESOURCES.contains(&self.subresource.as_str()))
            || (!self.is_resource_request && self.path.starts_with("/debug/pprof/"))
    }

    /// Fills in the resource attributes; `Err` for a special verb with nothing after it.
    fn resolve(&mut self, method: &Method, segments: &[&str], query: &Query) -> Result<(), ()> {
        let [prefix, rest @ ..] = segments else {
            return Ok(());
        };
        if segments.len() < 3 || !API_PREFIXES.contains(prefix) {
            return Ok(());
        }
        self.api_prefix = (*prefix).into();
        let mut rest = rest;
        if *prefix != GROUPLESS_API_PREFIX {
            // /apis/GROUP/VERSION alone is discovery: a resource must follow.
            let [group, after @ ..] = rest else {
                return Ok(());
            };
            if rest.len() < 3 {
                return Ok(());
            }
            self.api_group = (*group).into();
            rest = after;
        }
        let [version, after @ ..] = rest else {
            return Ok(());
        };
        self.is_resource_request = true;
        self.api_version = (*version).into();
        rest = after;

        let verb_from_path = rest.first().is_some_and(|s| SPECIAL_VERBS.contains(s));
        if verb_from_path {
            if rest.len() < 2 {
                return Err(());
            }
            self.verb = rest[0].into();
            rest = &rest[1..];
        } else {
            self.verb = crud_verb(method).into();
        }

        if rest.first() == Some(&"namespaces") && rest.len() > 1 {
            self.namespace = rest[1].into();
            if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
                rest = &rest[2..];
            }
        }
        self.parts = rest.iter().map(|s| (*s).into()).collect();
        // proxy takes no subresource: what follows the name is the proxied path.
        if rest.len() >= 3 && self.verb != "proxy" {
            self.subresource = rest[2].into();
        }
        if rest.len() >= 2 {
            self.name = rest[1].into();
        }
        if let Some(resource) = rest.first() {
            self.resource = (*resource).into();
        }

        if self.name.is_empty() && self.verb == "get" {
            let options = query.list_options();
            self.verb = if options.watch { "watch" } else { "list" }.into();
            if let Some(name) = options.name.filter(|n| is_valid_path_segment_name(n)) {
                self.name = name.into();
            }
        }
        if self.name.is_empty() && self.verb == "delete" {
            self.verb = "deletecollection".into();
        }
        if !verb_from_path && VERBS_WITH_SELECTORS.contains(&self.verb.as_str()) {
            query
                .first("fieldSelector")
                .clone_into(&mut self.field_selector);
            query
                .first("labelSelector")
                .clone_into(&mut self.label_selector);
        }
        Ok(())
    }
}

fn crud_verb(method: &Method) -> &'static str {
    match *method {
        Method::POST => "create",
        Method::GET | Method::HEAD => "get",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "",
    }
}

/// A name that can stand in a URL path segment (apimachinery `IsValidPathSegmentName`;
/// the empty name passes, and then names nothing).
fn is_valid_path_segment_name(name: &str) -> bool {
    name != "." && name != ".." && !name.contains('/') && !name.contains('%')
}

// === impl Query ===

/// Query parameters decoded as Go's `url.ParseQuery` does: pairs split on `&`, a pair
/// containing `;` or an invalid escape is dropped, `+` is a space.
struct Query {
    pairs: Vec<(String, String)>,
}

/// What the API server reads from `metav1.ListOptions` to name the request.
struct ListOptions {
    watch: bool,
    name: Option<String>,
}

impl Query {
    /// `None` when a selector decodes to bytes that are not UTF-8: the API server
    /// would take those bytes as they are (a name, a recorded selector), and a lossy
    /// copy would authorize something else. Elsewhere invalid UTF-8 cannot change the
    /// attributes (no key read here matches it; `watch` and the numbers read the same
    /// either way), so it is replaced rather than refused.
    fn parse(raw: &str) -> Option<Self> {
        let mut pairs = Vec::new();
        for pair in raw.split('&') {
            if pair.is_empty() || pair.contains(';') {
                continue;
            }
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let (Some(key), Some(value)) = (decode_bytes(key, true), decode_bytes(value, true))
            else {
                continue;
            };
            let Ok(key) = String::from_utf8(key) else {
                continue;
            };
            let value = match String::from_utf8(value) {
                Ok(value) => value,
                Err(_) if SELECTOR_KEYS.contains(&key.as_str()) => return None,
                Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
            };
            pairs.push((key, value));
        }
        Some(Self { pairs })
    }

    /// The first value of `key`, or "" (Go's `Values.Get`).
    fn first(&self, key: &str) -> &str {
        self.get(key).unwrap_or_default()
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The list options as the API server's parameter codec decodes them. When any of
    /// them fails to decode, the API server falls back to the raw `watch` value and no
    /// name; so does this.
    fn list_options(&self) -> ListOptions {
        let watch = self.get("watch").is_some_and(go_bool);
        let decoded = ["limit", "timeoutSeconds"]
            .iter()
            .all(|key| self.get(key).is_none_or(|v| v.parse::<i64>().is_ok()))
            && selectors::is_valid_label_selector(self.first("labelSelector"));
        let fields = decoded
            .then(|| selectors::parse_field_selector(self.first("fieldSelector")))
            .flatten();
        match fields {
            Some(terms) => ListOptions {
                watch,
                name: terms.required_exact_match("metadata.name"),
            },
            None => ListOptions { watch, name: None },
        }
    }
}

/// apimachinery's string-to-bool conversion: only `false` (any case) and `0` are false.
fn go_bool(value: &str) -> bool {
    !(value == "0" || value.eq_ignore_ascii_case("false"))
}

/// Percent-decodes a path (`plus_is_space` false) or a query component; `None` on a
/// `%` not followed by two hex digits, as Go's `url.unescape`.
fn decode_bytes(s: &str, plus_is_space: bool) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hi = char::from(hex[0]).to_digit(16)?;
                let lo = char::from(hex[1]).to_digit(16)?;
                out.push(u8::try_from(hi * 16 + lo).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests;
