use super::*;

fn parse(method: &str, url: &str) -> Result<RequestInfo, RequestInfoError> {
    let uri: Uri = url.parse().expect("test URL");
    let method = Method::from_bytes(method.as_bytes()).expect("test method");
    RequestInfo::parse(&method, &uri)
}

/// The attributes on one line, `_` for empty: "verb group version namespace resource
/// subresource name parts…".
fn summary(info: &RequestInfo) -> String {
    let or_blank = |s: &str| {
        if s.is_empty() {
            "_".to_owned()
        } else {
            s.to_owned()
        }
    };
    let parts = if info.parts.is_empty() {
        "_".to_owned()
    } else {
        info.parts.join(" ")
    };
    [
        &info.verb,
        &info.api_group,
        &info.api_version,
        &info.namespace,
        &info.resource,
        &info.subresource,
        &info.name,
    ]
    .map(|s| or_blank(s))
    .join(" ")
        + " "
        + &parts
}

fn check_resource_requests(cases: &[(&str, &str, &str)]) {
    for &(method, url, want) in cases {
        let info = parse(method, url).unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        assert_eq!(summary(&info), want, "{method} {url}");
        assert!(info.is_resource_request, "{method} {url}");
        let prefix = if url.trim_start_matches('/').starts_with("apis/") {
            "apis"
        } else {
            "api"
        };
        assert_eq!(info.api_prefix, prefix, "{method} {url}");
    }
}

/// Every success case of upstream's `TestGetAPIRequestInfo` and the resource cases of
/// `TestGetNonAPIRequestInfo` and `TestFieldSelectorParsing`.
#[test]
fn upstream_resource_requests() {
    check_resource_requests(&[
        // resource paths
        (
            "GET",
            "/api/v1/namespaces",
            "list _ v1 _ namespaces _ _ namespaces",
        ),
        (
            "GET",
            "/api/v1/namespaces/other",
            "get _ v1 other namespaces _ other namespaces other",
        ),
        (
            "GET",
            "/api/v1/namespaces/other/pods",
            "list _ v1 other pods _ _ pods",
        ),
        (
            "GET",
            "/api/v1/namespaces/other/pods/foo",
            "get _ v1 other pods _ foo pods foo",
        ),
        (
            "HEAD",
            "/api/v1/namespaces/other/pods/foo",
            "get _ v1 other pods _ foo pods foo",
        ),
        ("GET", "/api/v1/pods", "list _ v1 _ pods _ _ pods"),
        ("HEAD", "/api/v1/pods", "list _ v1 _ pods _ _ pods"),
        // Upstream briefly expected no namespace here (kubernetes#94656, closed
        // unmerged); the API server's namespace is the object's own name.
        (
            "PATCH",
            "/api/v1/namespaces/new-namespace",
            "patch _ v1 new-namespace namespaces _ new-namespace namespaces new-namespace",
        ),
        // special verbs
        (
            "GET",
            "/api/v1/proxy/namespaces/other/pods/foo",
            "proxy _ v1 other pods _ foo pods foo",
        ),
        (
            "GET",
            "/api/v1/proxy/namespaces/other/pods/foo/subpath/not/a/subresource",
            "proxy _ v1 other pods _ foo pods foo subpath not a subresource",
        ),
        ("GET", "/api/v1/watch/pods", "watch _ v1 _ pods _ _ pods"),
        (
            "GET",
            "/api/v1/pods?watch=true",
            "watch _ v1 _ pods _ _ pods",
        ),
        (
            "GET",
            "/api/v1/pods?watch=false",
            "list _ v1 _ pods _ _ pods",
        ),
        (
            "GET",
            "/api/v1/watch/namespaces/other/pods",
            "watch _ v1 other pods _ _ pods",
        ),
        (
            "GET",
            "/api/v1/namespaces/other/pods?watch=1",
            "watch _ v1 other pods _ _ pods",
        ),
        (
            "GET",
            "/api/v1/namespaces/other/pods?watch=0",
            "list _ v1 other pods _ _ pods",
        ),
        // subresources
        (
            "GET",
            "/api/v1/namespaces/other/pods/foo/status",
            "get _ v1 other pods status foo pods foo status",
        ),
        (
            "GET",
            "/api/v1/namespaces/other/pods/foo/proxy/subpath",
            "get _ v1 other pods proxy foo pods foo proxy subpath",
        ),
        (
            "PUT",
            "/api/v1/namespaces/other/finalize",
            "update _ v1 other namespaces finalize other namespaces other finalize",
        ),
        (
            "PUT",
            "/api/v1/namespaces/other/status",
            "update _ v1 other namespaces status other namespaces other status",
        ),
        // verbs
        (
            "PATCH",
            "/api/v1/namespaces/other/pods/foo",
            "patch _ v1 other pods _ foo pods foo",
        ),
        (
            "DELETE",
            "/api/v1/namespaces/other/pods/foo",
            "delete _ v1 other pods _ foo pods foo",
        ),
        (
            "POST",
            "/api/v1/namespaces/other/pods",
            "create _ v1 other pods _ _ pods",
        ),
        // deletecollection
        (
            "DELETE",
            "/api/v1/nodes",
            "deletecollection _ v1 _ nodes _ _ nodes",
        ),
        (
            "DELETE",
            "/api/v1/namespaces",
            "deletecollection _ v1 _ namespaces _ _ namespaces",
        ),
        (
            "DELETE",
            "/api/v1/namespaces/other/pods",
            "deletecollection _ v1 other pods _ _ pods",
        ),
        (
            "DELETE",
            "/apis/extensions/v1/namespaces/other/pods",
            "deletecollection extensions v1 other pods _ _ pods",
        ),
        // groups and versions
        (
            "POST",
            "/apis/extensions/v1/namespaces/other/pods",
            "create extensions v1 other pods _ _ pods",
        ),
        (
            "POST",
            "/apis/extensions/v1beta3/namespaces/other/pods",
            "create extensions v1beta3 other pods _ _ pods",
        ),
        // TestGetNonAPIRequestInfo's resource requests
        (
            "GET",
            "/api/version/resource",
            "list _ version _ resource _ _ resource",
        ),
        (
            "GET",
            "/apis/group/version/resource/name/subresource",
            "get group version _ resource subresource name resource name subresource",
        ),
        (
            "GET",
            "/api/version/resource/name/subresource",
            "get _ version _ resource subresource name resource name subresource",
        ),
        ("GET", "/apis/batch/v1/job", "list batch v1 _ job _ _ job"),
        (
            "GET",
            "/apis/batch/v1/job/foo",
            "get batch v1 _ job _ foo job foo",
        ),
        (
            "GET",
            "/apis/batch/v1/job/foo/scale",
            "get batch v1 _ job scale foo job foo scale",
        ),
        // TestFieldSelectorParsing
        (
            "GET",
            "/apis/group/version/resource",
            "list group version _ resource _ _ resource",
        ),
        (
            "GET",
            "/apis/group/version/resource?fieldSelector=metadata.name=name1",
            "list group version _ resource _ name1 resource",
        ),
        (
            "GET",
            "/apis/group/version/resource?watch=true&fieldSelector=metadata.name=name1",
            "watch group version _ resource _ name1 resource",
        ),
        (
            "GET",
            "/apis/group/version/resource?fieldSelector=foo=bar",
            "list group version _ resource _ _ resource",
        ),
        (
            "GET",
            "/apis/group/version/resource?fieldSelector=metadata.name=name1,foo",
            "list group version _ resource _ _ resource",
        ),
        (
            "GET",
            "/apis/group/version/resource?fieldSelector=metadata.name=name1,foo&watch=true",
            "watch group version _ resource _ _ resource",
        ),
        (
            "GET",
            "/apis/group/version/resource?fieldSelector=metadata.name=name1,foo&watch=false",
            "list group version _ resource _ _ resource",
        ),
    ]);
}

#[test]
fn kgate_resource_requests() {
    check_resource_requests(&[
        // watch truthiness: anything but false (any case) or 0; the first value counts
        (
            "GET",
            "/api/v1/pods?watch=FALSE",
            "list _ v1 _ pods _ _ pods",
        ),
        (
            "GET",
            "/api/v1/pods?watch=yes",
            "watch _ v1 _ pods _ _ pods",
        ),
        ("GET", "/api/v1/pods?watch=", "watch _ v1 _ pods _ _ pods"),
        ("GET", "/api/v1/pods?watch", "watch _ v1 _ pods _ _ pods"),
        ("GET", "/api/v1/pods?watch=00", "watch _ v1 _ pods _ _ pods"),
        (
            "GET",
            "/api/v1/pods?watch=0&watch=1",
            "list _ v1 _ pods _ _ pods",
        ),
        (
            "GET",
            "/api/v1/pods?Watch=true",
            "list _ v1 _ pods _ _ pods",
        ),
        // Go's query parsing drops pairs with a bad escape or a semicolon
        ("GET", "/api/v1/pods?watch=%zz", "list _ v1 _ pods _ _ pods"),
        ("GET", "/api/v1/pods?watch=1;x", "list _ v1 _ pods _ _ pods"),
        (
            "GET",
            "/api/v1/pods?watch=%74rue",
            "watch _ v1 _ pods _ _ pods",
        ),
        // watch is a list verb only: it never applies to a named get
        (
            "GET",
            "/api/v1/namespaces/d/pods/p?watch=1",
            "get _ v1 d pods _ p pods p",
        ),
        (
            "GET",
            "/api/v1/watch/namespaces/other/pods/foo",
            "watch _ v1 other pods _ foo pods foo",
        ),
        (
            "GET",
            "/apis/apps/v1/watch/deployments",
            "watch apps v1 _ deployments _ _ deployments",
        ),
        ("POST", "/api/v1/watch/pods", "watch _ v1 _ pods _ _ pods"),
        (
            "GET",
            "/api/v1/proxy/nodes/n1:10250/metrics",
            "proxy _ v1 _ nodes _ n1:10250 nodes n1:10250 metrics",
        ),
        // subresources, deeper paths stay in parts
        (
            "POST",
            "/api/v1/namespaces/demo/pods/web-0/exec?command=sh&stdin=true",
            "create _ v1 demo pods exec web-0 pods web-0 exec",
        ),
        (
            "GET",
            "/api/v1/namespaces/demo/pods/web-0/exec?command=sh",
            "get _ v1 demo pods exec web-0 pods web-0 exec",
        ),
        (
            "POST",
            "/api/v1/namespaces/demo/pods/web-0/attach",
            "create _ v1 demo pods attach web-0 pods web-0 attach",
        ),
        (
            "POST",
            "/api/v1/namespaces/demo/pods/web-0/portforward",
            "create _ v1 demo pods portforward web-0 pods web-0 portforward",
        ),
        (
            "GET",
            "/api/v1/namespaces/demo/pods/web-0/log?follow=true",
            "get _ v1 demo pods log web-0 pods web-0 log",
        ),
        (
            "POST",
            "/api/v1/namespaces/demo/serviceaccounts/bot/token",
            "create _ v1 demo serviceaccounts token bot serviceaccounts bot token",
        ),
        (
            "PATCH",
            "/apis/apps/v1/namespaces/demo/deployments/web/scale",
            "patch apps v1 demo deployments scale web deployments web scale",
        ),
        (
            "DELETE",
            "/api/v1/namespaces/d/services/https:web:8443/proxy/a/b",
            "delete _ v1 d services proxy https:web:8443 services https:web:8443 proxy a b",
        ),
        (
            "OPTIONS",
            "/api/v1/namespaces/other/pods",
            "_ _ v1 other pods _ _ pods",
        ),
        (
            "CONNECT",
            "/api/v1/namespaces/d/pods/p/exec",
            "_ _ v1 d pods exec p pods p exec",
        ),
        (
            "POST",
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            "create rbac.authorization.k8s.io v1 _ clusterrolebindings _ _ clusterrolebindings",
        ),
        // the namespace object and what is inside it
        (
            "DELETE",
            "/api/v1/namespaces/other",
            "delete _ v1 other namespaces _ other namespaces other",
        ),
        (
            "PATCH",
            "/api/v1/namespaces/ns/status",
            "patch _ v1 ns namespaces status ns namespaces ns status",
        ),
        (
            "GET",
            "/api/v1/namespaces/ns/namespaces/x",
            "get _ v1 ns namespaces _ x namespaces x",
        ),
        (
            "GET",
            "/api/v1/namespaces/ns/status/x",
            "get _ v1 ns namespaces status ns namespaces ns status x",
        ),
        (
            "GET",
            "/apis/g/v/namespaces/ns",
            "get g v ns namespaces _ ns namespaces ns",
        ),
        // deletecollection takes no name from a field selector
        (
            "DELETE",
            "/api/v1/namespaces/d/pods?fieldSelector=metadata.name=p",
            "deletecollection _ v1 d pods _ _ pods",
        ),
        // field selectors that name one object
        (
            "GET",
            "/api/v1/namespaces/demo/secrets?fieldSelector=metadata.name%3Ddb-creds",
            "list _ v1 demo secrets _ db-creds secrets",
        ),
        (
            "GET",
            "/api/v1/namespaces/demo/secrets?fieldSelector=metadata.name%3D%3Ddb-creds",
            "list _ v1 demo secrets _ db-creds secrets",
        ),
        (
            "GET",
            "/api/v1/namespaces/demo/secrets?fieldSelector=type%3DOpaque,metadata.name%3Ddb",
            "list _ v1 demo secrets _ db secrets",
        ),
        // terms are sorted before the first match is taken
        (
            "GET",
            "/api/v1/secrets?fieldSelector=metadata.name=b,metadata.name=a",
            "list _ v1 _ secrets _ a secrets",
        ),
        (
            "GET",
            "/api/v1/secrets?fieldSelector=metadata.name!=a,metadata.name=b",
            "list _ v1 _ secrets _ b secrets",
        ),
        // escaped values; the left side has no escapes and no trimming
        (
            "GET",
            "/api/v1/secrets?fieldSelector=metadata.name=a%5C%2Cb",
            "list _ v1 _ secrets _ a,b secrets",
        ),
        (
            "GET",
            "/api/v1/secrets?fieldSelector=metadata.name%20=a",
            "list _ v1 _ secrets _ _ secrets",
        ),
        (
            "GET",
            "/api/v1/secrets?fieldSelector=metadata.name=a=b",
            "list _ v1 _ secrets _ _ secrets",
        ),
        (
            "GET",
            "/api/v1/secrets?fieldSelector=metadata.name=a%5Cb",
            "list _ v1 _ secrets _ _ secrets",
        ),
        (
            "GET",
            "/api/v1/secrets?fieldSelector=metadata.name=a%5C",
            "list _ v1 _ secrets _ _ secrets",
        ),
        (
            "GET",
            "/api/v1/secrets?fieldSelector=x!=a=b,metadata.name=c",
            "list _ v1 _ secrets _ _ secrets",
        ),
        (
            "GET",
            "/api/v1/secrets?fieldSelector=metadata.name!=a",
            "list _ v1 _ secrets _ _ secrets",
        ),
        (
            "GET",
            "/api/v1/secrets?fieldSelector=,metadata.name=a,",
            "list _ v1 _ secrets _ a secrets",
        ),
        (
            "GET",
            "/api/v1/secrets?fieldSelector=metadata.name=a+b",
            "list _ v1 _ secrets _ a b secrets",
        ),
        // a name that is not a path segment is not a name
        (
            "GET",
            "/api/v1/secrets?fieldSelector=metadata.name=..",
            "list _ v1 _ secrets _ _ secrets",
        ),
        (
            "GET",
            "/api/v1/secrets?fieldSelector=metadata.name=a%2Fb",
            "list _ v1 _ secrets _ _ secrets",
        ),
        (
            "GET",
            "/api/v1/secrets?fieldSelector=metadata.name=a%25b",
            "list _ v1 _ secrets _ _ secrets",
        ),
        // any list option that fails to decode drops the name, not the watch
        (
            "GET",
            "/api/v1/secrets?limit=abc&fieldSelector=metadata.name=n",
            "list _ v1 _ secrets _ _ secrets",
        ),
        (
            "GET",
            "/api/v1/secrets?limit=&fieldSelector=metadata.name=n",
            "list _ v1 _ secrets _ _ secrets",
        ),
        (
            "GET",
            "/api/v1/secrets?watch=1&timeoutSeconds=1.5&fieldSelector=metadata.name=n",
            "watch _ v1 _ secrets _ _ secrets",
        ),
        (
            "GET",
            "/api/v1/secrets?limit=500&timeoutSeconds=-1&fieldSelector=metadata.name=n",
            "list _ v1 _ secrets _ n secrets",
        ),
        (
            "GET",
            "/api/v1/secrets?labelSelector=app%3Dweb,tier%20in%20(a,b)&fieldSelector=metadata.name=n",
            "list _ v1 _ secrets _ n secrets",
        ),
        (
            "GET",
            "/api/v1/secrets?labelSelector=app%3D%3D%3D&fieldSelector=metadata.name=n",
            "list _ v1 _ secrets _ _ secrets",
        ),
        (
            "GET",
            "/api/v1/secrets?labelSelector=-bad&watch=1&fieldSelector=metadata.name=n",
            "watch _ v1 _ secrets _ _ secrets",
        ),
        // a name selector never renames a named request
        (
            "GET",
            "/api/v1/namespaces/demo/pods/web-0?fieldSelector=metadata.name=other",
            "get _ v1 demo pods _ web-0 pods web-0",
        ),
        // percent-encoding and slashes, as Go decodes URL.Path
        (
            "GET",
            "/api/v1/namespaces/demo/configmaps/a%2Db",
            "get _ v1 demo configmaps _ a-b configmaps a-b",
        ),
        (
            "GET",
            "/api/v1/namespaces/a%2Fb/pods",
            "get _ v1 a b _ pods b pods",
        ),
        (
            "GET",
            "/api/v1/namespaces/demo/configmaps/a+b",
            "get _ v1 demo configmaps _ a+b configmaps a+b",
        ),
        (
            "GET",
            "/api/v1/namespaces/demo/pods/",
            "list _ v1 demo pods _ _ pods",
        ),
        ("GET", "//api/v1/pods", "list _ v1 _ pods _ _ pods"),
        (
            "GET",
            "/api/v1/namespaces//pods",
            "list _ v1 _ pods _ _ pods",
        ),
        (
            "GET",
            "/api/v1/namespaces/demo/pods/..",
            "get _ v1 demo pods _ .. pods ..",
        ),
        ("GET", "/api%2Fv1%2Fpods", "list _ v1 _ pods _ _ pods"),
    ]);
}

#[test]
fn non_resource_requests() {
    let cases = [
        // upstream's non-resource cases
        ("GET", "/", "get"),
        ("GET", "/api/version/", "get"),
        ("GET", "/apis/group/version/", "get"),
        ("GET", "/badprefix/version/resource", "get"),
        ("GET", "/apis/version/resource", "get"),
        ("GET", "/not-api/version/resource", "get"),
        ("GET", "/apis/extensions/v1beta1", "get"),
        ("GET", "/apis/extensions/v1beta1/", "get"),
        ("GET", "/api/version", "get"),
        ("GET", "/api", "get"),
        // discovery and the server's own endpoints
        ("GET", "/api/v1", "get"),
        ("GET", "/apis", "get"),
        ("GET", "/apis/apps", "get"),
        ("GET", "/apis/apps/v1", "get"),
        ("GET", "/apis/apps/v1?timeout=32s", "get"),
        ("GET", "/version", "get"),
        ("GET", "/healthz", "get"),
        ("GET", "/livez/etcd", "get"),
        ("GET", "/readyz?verbose", "get"),
        ("GET", "/openapi/v2", "get"),
        ("GET", "/openapi/v3/apis/apps/v1", "get"),
        ("GET", "/metrics", "get"),
        ("GET", "/API/v1/pods", "get"),
        ("HEAD", "/healthz", "head"),
        ("POST", "/logs", "post"),
        ("DELETE", "/healthz", "delete"),
        ("PURGE", "/api", "purge"),
    ];
    for (method, url, verb) in cases {
        let info = parse(method, url).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!(!info.is_resource_request, "{url}");
        assert_eq!(info.verb, verb, "{url}");
        assert_eq!(summary(&info), format!("{verb} _ _ _ _ _ _ _"), "{url}");
        assert_eq!(info.path, url.split('?').next().unwrap(), "{url}");
    }
}

#[test]
fn api_prefix_of_discovery_paths() {
    // The API server records the prefix before it finds that no resource follows.
    for (url, prefix) in [("/apis/apps/v1", "apis"), ("/api/v1", ""), ("/apis", "")] {
        let info = parse("GET", url).unwrap();
        assert_eq!(
            (info.is_resource_request, info.api_prefix.as_str()),
            (false, prefix),
            "{url}"
        );
    }
}

#[test]
fn selectors_recorded_for_selector_authorization() {
    // (method, url, field selector, label selector)
    let cases = [
        (
            "GET",
            "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1&labelSelector=a%3Db",
            "spec.nodeName=n1",
            "a=b",
        ),
        (
            "GET",
            "/api/v1/pods?watch=1&labelSelector=a+in+(b)",
            "",
            "a in (b)",
        ),
        (
            "DELETE",
            "/api/v1/namespaces/d/pods?labelSelector=x",
            "",
            "x",
        ),
        // only list, watch and deletecollection; never a verb from the path
        ("GET", "/api/v1/namespaces/d/pods/p?labelSelector=x", "", ""),
        ("GET", "/api/v1/watch/pods?labelSelector=x", "", ""),
        ("POST", "/api/v1/pods?labelSelector=x", "", ""),
        // recorded raw, even when it does not parse
        (
            "GET",
            "/api/v1/pods?labelSelector=%3D%3D%3D&labelSelector=b",
            "",
            "===",
        ),
    ];
    for (method, url, field, label) in cases {
        let info = parse(method, url).unwrap();
        assert_eq!(
            (info.field_selector.as_str(), info.label_selector.as_str()),
            (field, label),
            "{method} {url}"
        );
    }
    let json = serde_json::to_value(parse("GET", "/api/v1/pods?labelSelector=x").unwrap()).unwrap();
    assert_eq!(json["labelSelector"], "x");
    assert_eq!(json["isResourceRequest"], true);
    assert!(json.get("fieldSelector").is_none());
}

#[test]
fn errors_not_guesses() {
    let cases = [
        ("/api/v1/watch", "SpecialVerbWithoutResource"),
        ("/api/v1/proxy", "SpecialVerbWithoutResource"),
        ("/apis/apps/v1/watch/", "SpecialVerbWithoutResource"),
        ("/api/v1/namespaces/%zz/pods", "PathNotDecodable"),
        ("/api/v1/namespaces/%2/pods", "PathNotDecodable"),
        ("/api/v1/namespaces/%ff%fe/pods", "PathNotDecodable"),
        ("/api/v1/pods?fieldSelector=%ff", "QueryNotDecodable"),
        ("/api/v1/pods?labelSelector=a%3D%C3", "QueryNotDecodable"),
        ("*", "PathNotAbsolute"),
        ("example.com:443", "PathNotAbsolute"),
    ];
    for (url, want) in cases {
        let method = if url.starts_with('/') {
            "GET"
        } else {
            "OPTIONS"
        };
        let error = parse(method, url).expect_err(url);
        assert!(format!("{error:?}").starts_with(want), "{url}: {error:?}");
    }
    // Odd selectors and queries never panic.
    for q in [
        "fieldSelector=",
        "fieldSelector=%5C",
        "fieldSelector=a%5C,b",
        "fieldSelector==x",
        "fieldSelector=metadata.name",
        "watch&watch&fieldSelector=,,,",
        "labelSelector=%00",
        "labelSelector=!",
        "labelSelector=a+in+(",
        "labelSelector=((((",
        "&&&=&=",
    ] {
        parse("GET", &format!("/api/v1/pods?{q}")).unwrap();
    }
}

#[test]
fn long_running_requests() {
    let cases = [
        ("GET", "/api/v1/pods?watch=1", true),
        ("GET", "/api/v1/watch/pods", true),
        ("POST", "/api/v1/namespaces/d/pods/p/exec", true),
        ("GET", "/api/v1/namespaces/d/pods/p/log", true),
        ("POST", "/api/v1/namespaces/d/pods/p/attach", true),
        ("POST", "/api/v1/namespaces/d/pods/p/portforward", true),
        ("GET", "/api/v1/namespaces/d/services/s/proxy/x", true),
        ("GET", "/api/v1/proxy/namespaces/d/pods/p", true),
        ("GET", "/debug/pprof/profile", true),
        ("GET", "/api/v1/pods", false),
        ("GET", "/api/v1/namespaces/d/pods/p", false),
        ("GET", "/api/v1/namespaces/d/pods/p/status", false),
        (
            "GET",
            "/api/v1/namespaces/d/pods/p/ephemeralcontainers",
            false,
        ),
        ("GET", "/version", false),
        ("GET", "/debug/pprof", false),
        ("GET", "/api/v1/namespaces/d/pods/debug/pprof/x", false),
    ];
    for (method, url, want) in cases {
        assert_eq!(
            parse(method, url).unwrap().is_long_running(),
            want,
            "{method} {url}"
        );
    }
}
