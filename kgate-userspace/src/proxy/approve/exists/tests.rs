use http::{HeaderValue, Method, Uri, header::CONTENT_TYPE};

use super::*;

fn path(method: &str, uri: &str, content_type: Option<&str>) -> Option<String> {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let info = RequestInfo::parse(&method, &uri.parse::<Uri>().unwrap()).unwrap();
    let mut headers = HeaderMap::new();
    if let Some(ct) = content_type {
        headers.insert(CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
    }
    object_path(&info, &headers)
}

#[test]
fn requests_a_missing_object_fails_are_checked() {
    let pod = Some("/api/v1/namespaces/demo/pods/web-0".to_owned());
    let cases = [
        (
            "GET",
            "/api/v1/namespaces/demo/pods/web-0",
            None,
            pod.clone(),
        ),
        (
            "DELETE",
            "/api/v1/namespaces/demo/pods/web-0",
            None,
            pod.clone(),
        ),
        (
            "PATCH",
            "/api/v1/namespaces/demo/pods/web-0",
            Some("application/strategic-merge-patch+json"),
            pod.clone(),
        ),
        (
            "PATCH",
            "/api/v1/namespaces/demo/pods/web-0/status",
            Some("application/merge-patch+json"),
            pod.clone(),
        ),
        // subresources of the object: the object itself is read
        (
            "GET",
            "/api/v1/namespaces/demo/pods/web-0/log",
            None,
            pod.clone(),
        ),
        (
            "POST",
            "/api/v1/namespaces/demo/pods/web-0/exec?command=sh",
            None,
            pod.clone(),
        ),
        (
            "POST",
            "/api/v1/namespaces/demo/pods/web-0/eviction",
            None,
            pod,
        ),
        (
            "DELETE",
            "/apis/apps/v1/namespaces/demo/deployments/web",
            None,
            Some("/apis/apps/v1/namespaces/demo/deployments/web".to_owned()),
        ),
        (
            "DELETE",
            "/api/v1/namespaces/demo",
            None,
            Some("/api/v1/namespaces/demo".to_owned()),
        ),
        (
            "PUT",
            "/api/v1/namespaces/demo/finalize",
            None,
            None, // an update
        ),
        (
            "DELETE",
            "/apis/rbac.authorization.k8s.io/v1/clusterroles/system:x%20y",
            None,
            Some("/apis/rbac.authorization.k8s.io/v1/clusterroles/system:x%20y".to_owned()),
        ),
        // a missing object is not these requests' failure
        ("POST", "/api/v1/namespaces/demo/pods", None, None),
        ("PUT", "/api/v1/namespaces/demo/endpoints/web", None, None),
        (
            "PATCH",
            "/api/v1/namespaces/demo/configmaps/c",
            Some("application/apply-patch+yaml"),
            None,
        ),
        ("GET", "/api/v1/namespaces/demo/pods", None, None),
        ("DELETE", "/api/v1/namespaces/demo/pods", None, None),
        (
            "GET",
            "/api/v1/namespaces/demo/pods?watch=1&fieldSelector=metadata.name%3Dweb-0",
            None,
            None,
        ),
        (
            "GET",
            "/api/v1/watch/namespaces/demo/pods/web-0",
            None,
            None,
        ),
        ("GET", "/healthz", None, None),
    ];
    for (method, uri, content_type, want) in cases {
        assert_eq!(path(method, uri, content_type), want, "{method} {uri}");
    }
}
