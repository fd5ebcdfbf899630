//! The API-server double against the real kubectl, directly (no kgate): the double
//! must be faithful before kgate is judged against it.

use std::{fs, process::Command};

use kgate_apiserver_double::{
    ApiServer, Config, Handle,
    client::{Kubectl, kubeconfig, scratch_dir},
};

fn kubectl(server: &Handle, tag: &str) -> Kubectl {
    Kubectl::new(
        scratch_dir(tag),
        &server.url(),
        server.ca_pem(),
        server.admin_token(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_reads_and_writes() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let k = kubectl(&server, "rw");
    tokio::task::spawn_blocking(move || {
        let pods = k.ok(&["get", "pods"]);
        assert!(pods.contains("web-0") && pods.contains("Running"), "{pods}");
        let yaml = k.ok(&["get", "pod", "web-0", "-o", "yaml"]);
        assert!(yaml.contains("nodeName: node-1"), "{yaml}");
        let secret = k.ok(&[
            "get",
            "secret",
            "db-creds",
            "-o",
            "jsonpath={.data.password}",
        ]);
        assert_eq!(secret, "czNjcjN0LXBhc3N3b3Jk");
        // A manifest goes as JSON (`kubectl create configmap` sends protobuf: see
        // double_fidelity.rs).
        let manifest = k.config.with_file_name("cm.yaml");
        fs::write(
            &manifest,
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: made}\ndata: {a: '1'}\n",
        )
        .unwrap();
        let manifest = manifest.to_str().unwrap();
        // The double serves no OpenAPI schemas for client-side validation.
        k.ok(&["create", "--validate=false", "-f", manifest]);
        let (ok, _, err) = k.run(&["create", "--validate=false", "-f", manifest]);
        assert!(
            !ok && err.contains("AlreadyExists")
                && err.contains("configmaps \"made\" already exists"),
            "{err}"
        );
        k.ok(&[
            "patch",
            "configmap",
            "made",
            "--type=merge",
            "-p",
            r#"{"data":{"b":"2"}}"#,
        ]);
        let data = k.ok(&["get", "configmap", "made", "-o", "jsonpath={.data}"]);
        assert!(
            data.contains("\"b\":\"2\"") && data.contains("\"a\":\"1\""),
            "{data}"
        );
        k.ok(&["scale", "deployment", "web", "--replicas=3"]);
        assert_eq!(
            k.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
            "3"
        );
        k.ok(&["delete", "configmap", "made"]);
        let (ok, _, err) = k.run(&["get", "configmap", "made"]);
        assert!(
            !ok && err.contains("NotFound") && err.contains("configmaps \"made\" not found"),
            "{err}"
        );
        let (ok, out, _e) = k.run(&["exec", "web-0", "--", "echo", "hi", "there"]);
        assert!(ok && out == "hi there\n", "{out} / {_e}");
        let logs = k.ok(&["logs", "web-0"]);
        assert!(
            logs.starts_with("line 1\n") && logs.ends_with("line 10\n"),
            "{logs}"
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn unauthenticated_and_bad_tokens() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let dir = scratch_dir("double-auth");
    let bad = kubeconfig(&dir, &server.url(), server.ca_pem(), "not-a-token");
    // A discovery cache of its own (see `Kubectl::command`): with a cached discovery
    // kubectl skips /api and words the 401 otherwise.
    let cache = dir.join("kubectl-cache");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&bad)
            .arg("--cache-dir")
            .arg(&cache)
            .args(["get", "pods"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // kubectl's wording for a 401 Status from the API server.
    assert!(
        !out.status.success() && err.contains("provide credentials"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn service_account_tokens_request_review_and_verify() {
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use serde_json::{Value, json};

    // The token below is for this audience: as on a cluster whose `--api-audiences`
    // names it, it is a credential for the API.
    let server = ApiServer::start(Config {
        api_audiences: vec!["https://kubernetes.default.svc".into()],
        ..Config::default()
    })
    .await
    .unwrap();
    let client = kgate_apiserver_double::client::https_client(server.ca_pem(), false);
    let call = |method: &str, path: &str, token: &str, body: Option<Value>| {
        let req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", server.url()))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))
            .unwrap();
        let fut = client.request(req);
        async move {
            let response = fut.await.unwrap();
            let code = response.status().as_u16();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (
                code,
                serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null),
            )
        }
    };
    let admin = server.admin_token().to_owned();

    // TokenRequest, bound to a pod.
    let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 3600, "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web-0"}}});
    let (code, issued) = call(
        "POST",
        "/api/v1/namespaces/demo/serviceaccounts/bot/token",
        &admin,
        Some(request.clone()),
    )
    .await;
    assert_eq!(code, 201, "{issued}");

    let token = issued["status"]["token"].as_str().unwrap().to_owned();
    let [header, claims, signature]: [&str; 3] =
        token.split('.').collect::<Vec<_>>().try_into().unwrap();
    let claims: Value = serde_json::from_slice(&B64.decode(claims).unwrap()).unwrap();
    assert_eq!(claims["sub"], "system:serviceaccount:demo:bot");
    assert_eq!(claims["aud"], json!(["https://kubernetes.default.svc"]));
    assert_eq!(claims["kubernetes.io"]["pod"]["name"], "web-0");
    assert_eq!(claims["kubernetes.io"]["node"]["name"], "node-1");
    assert_eq!(
        claims["kubernetes.io"]["pod"]["uid"],
        server.get("pods", "demo", "web-0").unwrap()["metadata"]["uid"]
    );

    // The signature verifies with the key the OIDC discovery publishes.
    let (_, discovery) = call("GET", "/.well-known/openid-configuration", &admin, None).await;
    assert_eq!(discovery["issuer"], claims["iss"]);
    let (_, jwks) = call("GET", "/openid/v1/jwks", &admin, None).await;
    let key = &jwks["keys"][0];
    let header: Value = serde_json::from_slice(&B64.decode(header).unwrap()).unwrap();
    assert_eq!(
        (header["alg"].as_str(), &header["kid"]),
        (Some("ES256"), &key["kid"])
    );
    let point = [
        &[4u8][..],
        &B64.decode(key["x"].as_str().unwrap()).unwrap(),
        &B64.decode(key["y"].as_str().unwrap()).unwrap(),
    ]
    .concat();
    let signed = &token[..token.rfind('.').unwrap()];
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point)
        .verify(signed.as_bytes(), &B64.decode(signature).unwrap())
        .expect("signature verifies against the JWKS");

    // TokenReview says who it is, with the pod in extra.
    let review = |token: String| json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}});
    let (code, reviewed) = call(
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        &admin,
        Some(review(token.clone())),
    )
    .await;
    assert_eq!(code, 201);
    assert_eq!(reviewed["status"]["authenticated"], true, "{reviewed}");
    assert_eq!(
        reviewed["status"]["user"]["username"],
        "system:serviceaccount:demo:bot"
    );
    assert_eq!(
        reviewed["status"]["user"]["extra"]["authentication.kubernetes.io/pod-name"],
        json!(["web-0"])
    );

    // The token is a credential for the API; its requests are the service account's.
    let (code, _) = call("GET", "/api/v1/namespaces/demo/pods", &token, None).await;
    assert_eq!(code, 200);
    assert_eq!(
        server.requests().last().unwrap().user.as_deref(),
        Some("system:serviceaccount:demo:bot")
    );

    // Expired, foreign and unbound-to-anything-real tokens.
    let expired = server.sign_claims(&json!({"iss": claims["iss"], "sub": "system:serviceaccount:demo:bot", "aud": ["x"], "exp": 1, "nbf": 0}));
    let (_, reviewed) = call(
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        &admin,
        Some(review(expired.clone())),
    )
    .await;
    assert_eq!(reviewed["status"]["authenticated"], false);
    assert!(
        reviewed["status"]["error"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{reviewed}"
    );
    assert_eq!(
        call("GET", "/api/v1/namespaces/demo/pods", &expired, None)
            .await
            .0,
        401
    );
    let forged = format!("{}.{}x", &token[..token.rfind('.').unwrap()], signature);
    assert_eq!(
        call("GET", "/api/v1/namespaces/demo/pods", &forged, None)
            .await
            .0,
        401
    );
    assert_eq!(
        call(
            "POST",
            "/api/v1/namespaces/demo/serviceaccounts/ghost/token",
            &admin,
            Some(request)
        )
        .await
        .0,
        404
    );
}
