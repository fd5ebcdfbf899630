//! Request attributes from a hostile method and request target: parsing never panics,
//! and what it derives obeys the API server's own shape rules (so that policy, which
//! trusts these fields, can never be handed a value the API server would not derive).

#![no_main]

use http::{Method, Uri};
use kgate::request_info::RequestInfo;
use libfuzzer_sys::fuzz_target;

const RESOURCE_VERBS: [&str; 11] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "proxy",
    "",
    // Not a verb the API server has: never expected, listed so the assertion names it.
    "<none>",
];

fuzz_target!(|data: &[u8]| {
    // The first line is the method, the rest the request target, as on the wire.
    let (method, target) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&b"GET"[..], data),
    };
    let Ok(method) = Method::from_bytes(method) else {
        return;
    };
    let Ok(uri) = Uri::try_from(target) else {
        return;
    };
    let Ok(info) = RequestInfo::parse(&method, &uri) else {
        return;
    };
    // Deterministic: the same request always gets the same attributes.
    assert_eq!(RequestInfo::parse(&method, &uri).as_ref(), Ok(&info));
    if !info.is_resource_request {
        assert_eq!(info.verb, method.as_str().to_ascii_lowercase());
        assert!(info.resource.is_empty() && info.name.is_empty() && info.namespace.is_empty());
        return;
    }
    assert!(
        RESOURCE_VERBS[..10].contains(&info.verb.as_str()),
        "verb {:?} from {method} {uri}",
        info.verb
    );
    assert!(info.api_prefix == "api" || info.api_prefix == "apis");
    // The core group has no group segment. (`/apis//v1/…` has an empty one: the API
    // server authorizes it as the core group and then answers 404; so does kgate.)
    if info.api_prefix == "api" {
        assert!(info.api_group.is_empty());
    }
    // Each attribute is one path segment (or, for a name, one that a field selector
    // named): none can smuggle a `/` into a policy match.
    for (what, value) in [
        ("group", &info.api_group),
        ("version", &info.api_version),
        ("namespace", &info.namespace),
        ("resource", &info.resource),
        ("subresource", &info.subresource),
        ("name", &info.name),
    ] {
        assert!(!value.contains('/'), "{what} {value:?} from {uri}");
    }
    if !info.name.is_empty() && info.parts.get(1) != Some(&info.name) {
        // A name from `fieldSelector=metadata.name=X`: only on reads of a collection.
        assert!(matches!(info.verb.as_str(), "list" | "watch"), "{info:?}");
        assert!(info.name != "." && info.name != ".." && !info.name.contains('%'));
    }
    if !info.resource.is_empty() {
        assert_eq!(info.parts.first(), Some(&info.resource));
    }
    // A named object is never a collection verb. (An empty name segment, as in
    // `/api/v1/pods//log`, names nothing: the API server lists, and so does kgate.)
    if info.parts.get(1).is_some_and(|name| !name.is_empty()) {
        assert!(
            !matches!(info.verb.as_str(), "list" | "deletecollection"),
            "{info:?}"
        );
    }
});
