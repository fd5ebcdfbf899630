//! What a real API server does and a naive double gets wrong, checked with the real
//! kubectl: protobuf request bodies (every imperative `kubectl create`, `create token`,
//! `auth can-i`, `auth whoami`), validation left to the server through OpenAPI v3,
//! strategic merge patches by merge key (`apply`, `set image`), delete answers and
//! graceful pod deletion, `-o wide` and `get all`; and the service-account key life
//! cycle (rotation, retirement, revocation when the bound pod goes), the token cache
//! and the API audiences a token must carry.

use std::{fs, time::Duration};

use kgate_apiserver_double::{
    ApiServer, Config, Handle, Subject,
    client::{HttpsClient, Kubectl, https_client, scratch_dir, text},
};
use serde_json::{Value, json};

fn kubectl(server: &Handle, tag: &str) -> Kubectl {
    Kubectl::new(
        scratch_dir(tag),
        &server.url(),
        server.ca_pem(),
        server.admin_token(),
    )
}

/// Runs kubectl without stalling the double's runtime; stdout on success.
fn ok(k: &Kubectl, args: &[&str]) -> String {
    tokio::task::block_in_place(|| k.ok(args))
}

/// Service account demo/bot, its token bound to the seeded pod web-0.
fn bot_on_web_0(server: &Handle) -> Subject {
    let uid = |resource, name| {
        server.get(resource, "demo", name).unwrap()["metadata"]["uid"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    Subject {
        namespace: "demo".into(),
        service_account: "bot".into(),
        service_account_uid: uid("serviceaccounts", "bot"),
        pod: Some(("web-0".into(), uid("pods", "web-0"), Some("node-1".into()))),
    }
}

/// A TokenReview of `token` by the admin, no audiences named: its `status`.
async fn review(client: &HttpsClient, server: &Handle, token: &str) -> Value {
    let body = json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
        "spec": {"token": token},
    });
    let req = http::Request::post(format!(
        "{}/apis/authentication.k8s.io/v1/tokenreviews",
        server.url()
    ))
    .header("authorization", format!("Bearer {}", server.admin_token()))
    .header("content-type", "application/json")
    .body(http_body_util::Full::new(bytes::Bytes::from(
        body.to_string(),
    )))
    .unwrap();
    let body = text(client.request(req).await.unwrap().into_body()).await;
    serde_json::from_str::<Value>(&body).unwrap()["status"].clone()
}

/// GET `path` with `token` as the bearer: the status and the body.
async fn get_as(client: &HttpsClient, server: &Handle, token: &str, path: &str) -> (u16, String) {
    let req = http::Request::get(format!("{}{path}", server.url()))
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let response = client.request(req).await.unwrap();
    let code = response.status().as_u16();
    (code, text(response.into_body()).await)
}

#[tokio::test(flavor = "multi_thread")]
async fn imperative_commands_send_protobuf_and_work() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let k = kubectl(&server, "fidelity-pb");
    ok(
        &k,
        &["create", "configmap", "cfg", "--from-literal=color=blue"],
    );
    ok(
        &k,
        &[
            "create",
            "secret",
            "generic",
            "sec",
            "--from-literal=password=s3cr3t",
        ],
    );
    ok(
        &k,
        &[
            "create",
            "deployment",
            "dep",
            "--image=nginx:1.27",
            "--replicas=2",
        ],
    );
    ok(&k, &["create", "namespace", "ns1"]);
    ok(&k, &["create", "serviceaccount", "sa1"]);
    assert_eq!(
        server.get("configmaps", "demo", "cfg").unwrap()["data"],
        json!({"color": "blue"})
    );
    assert_eq!(
        server.get("secrets", "demo", "sec").unwrap()["data"],
        json!({"password": "czNjcjN0"})
    );
    let dep = server.get("deployments", "demo", "dep").unwrap();
    assert_eq!(dep["spec"]["replicas"], 2);
    assert_eq!(
        dep["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.27"
    );
    assert!(server.get("namespaces", "", "ns1").is_some());
    assert!(server.get("serviceaccounts", "demo", "sa1").is_some());
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.method == "POST" && r.path == "/api/v1/namespaces/demo/configmaps"),
        "the create reached the double"
    );

    // A pod-bound token from kubectl, used as kubectl's credential.
    let token = ok(
        &k,
        &[
            "create",
            "token",
            "bot",
            "--audience=https://kubernetes.default.svc.cluster.local",
            "--bound-object-kind=Pod",
            "--bound-object-name=web-0",
            "--duration=1h",
        ],
    );
    let as_bot = Kubectl::new(
        scratch_dir("fidelity-bot"),
        &server.url(),
        server.ca_pem(),
        token.trim(),
    );
    let whoami = ok(&as_bot, &["auth", "whoami", "-o", "json"]);
    let whoami: Value = serde_json::from_str(&whoami).unwrap();
    let user = &whoami["status"]["userInfo"];
    assert_eq!(user["username"], "system:serviceaccount:demo:bot");
    assert_eq!(
        user["extra"]["authentication.kubernetes.io/pod-name"],
        json!(["web-0"])
    );

    assert_eq!(ok(&k, &["auth", "can-i", "delete", "pods"]).trim(), "yes");
    let jane = ok(
        &k,
        &[
            "auth",
            "whoami",
            "--as=jane",
            "--as-group=devs",
            "-o",
            "json",
        ],
    );
    let jane: Value = serde_json::from_str(&jane).unwrap();
    assert_eq!(jane["status"]["userInfo"]["username"], "jane");
    assert_eq!(
        jane["status"]["userInfo"]["groups"],
        json!(["devs", "system:authenticated"])
    );

    // What RBAC does not grant: `no` (exit 1), for the impersonated user only, and for
    // a `*` question that covers it.
    server.refuse_access("jane", "delete", "secrets");
    let can_i = |args: &[&str]| {
        let (ok, out, _) = tokio::task::block_in_place(|| k.run(args));
        (ok, out.trim().to_owned())
    };
    let no = (false, "no".to_owned());
    let yes = (true, "yes".to_owned());
    assert_eq!(
        can_i(&["auth", "can-i", "delete", "secrets", "--as=jane"]),
        no
    );
    assert_eq!(can_i(&["auth", "can-i", "*", "secrets", "--as=jane"]), no);
    assert_eq!(
        can_i(&["auth", "can-i", "delete", "pods", "--as=jane"]),
        yes
    );
    assert_eq!(can_i(&["auth", "can-i", "delete", "secrets"]), yes);
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_validates_on_the_server_and_merges_by_key() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let k = kubectl(&server, "fidelity-apply");
    let manifest = k.config.with_file_name("dep.yaml");
    let write = |image: &str, value: &str| {
        fs::write(
            &manifest,
            format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d2}}\nspec:\n  replicas: 1\n  \
                 selector: {{matchLabels: {{app: d2}}}}\n  template:\n    metadata: {{labels: {{app: d2}}}}\n    \
                 spec:\n      containers:\n      - {{name: a, image: '{image}', ports: [{{containerPort: 80}}], env: [{{name: X, value: '{value}'}}]}}\n      \
                 - {{name: b, image: busybox}}\n"
            ),
        )
        .unwrap();
    };
    let path = manifest.to_str().unwrap();
    // Default validation (Strict): kubectl finds fieldValidation in OpenAPI v3.
    write("nginx:1", "1");
    ok(&k, &["apply", "-f", path]);
    write("nginx:2", "2");
    ok(&k, &["apply", "-f", path]);
    ok(&k, &["set", "image", "deployment/d2", "b=busybox:2"]);
    let containers =
        server.get("deployments", "demo", "d2").unwrap()["spec"]["template"]["spec"]["containers"]
            .clone();
    assert_eq!(
        containers,
        json!([{"name": "a", "image": "nginx:2", "ports": [{"containerPort": 80}], "env": [{"name": "X", "value": "2"}]},
               {"name": "b", "image": "busybox:2"}]),
        "strategic merge keeps what the patch does not name, and stores no directives"
    );
    // Validation is the server's now: a misspelt field is refused.
    let typo = k.config.with_file_name("typo.yaml");
    fs::write(
        &typo,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: typo}\ndta: {a: b}\n",
    )
    .unwrap();
    let (applied_ok, _, err) =
        tokio::task::block_in_place(|| k.run(&["apply", "-f", typo.to_str().unwrap()]));
    assert!(
        !applied_ok && err.contains("strict decoding error: unknown field \"dta\""),
        "{err}"
    );
    assert!(server.get("configmaps", "demo", "typo").is_none());
    let applied: Vec<String> = server
        .requests()
        .into_iter()
        .filter(|r| r.query.contains("fieldManager=kubectl-client-side-apply"))
        .map(|r| format!("{} {}", r.method, r.query))
        .collect();
    assert_eq!(applied.len(), 3, "{applied:?}");
    assert!(
        applied.iter().all(|q| q.contains("fieldValidation=Strict")),
        "kubectl left validation to the server: {applied:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deletes_answer_like_the_real_server() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let client = https_client(server.ca_pem(), true);
    let call = |method: &str, path: &str| {
        let req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", server.url()))
            .header("authorization", format!("Bearer {}", server.admin_token()))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let fut = client.request(req);
        async move {
            let response = fut.await.unwrap();
            let code = response.status().as_u16();
            (
                code,
                serde_json::from_str::<Value>(&text(response.into_body()).await).unwrap(),
            )
        }
    };
    let uid = server.get("configmaps", "demo", "app-config").unwrap()["metadata"]["uid"].clone();
    let (code, body) = call("DELETE", "/api/v1/namespaces/demo/configmaps/app-config").await;
    assert_eq!(code, 200);
    assert_eq!(
        body,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
               "details": {"name": "app-config", "kind": "configmaps", "uid": uid}})
    );
    let (_, body) = call("DELETE", "/apis/apps/v1/namespaces/demo/deployments/web").await;
    assert_eq!(body["details"]["group"], "apps");

    // A pod on a node terminates: a deletionTimestamp first, gone once stopped.
    let (code, pod) = call("DELETE", "/api/v1/namespaces/demo/pods/web-0").await;
    assert_eq!(code, 200);
    assert_eq!(pod["kind"], "Pod");
    assert!(pod["metadata"]["deletionTimestamp"].is_string(), "{pod}");
    assert_eq!(pod["metadata"]["deletionGracePeriodSeconds"], 30);
    let k = kubectl(&server, "fidelity-delete");
    assert!(ok(&k, &["get", "pods"]).contains("Terminating"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(server.get("pods", "demo", "web-0").is_none());

    // A namespace takes its contents along.
    ok(&k, &["delete", "namespace", "demo"]);
    assert!(server.get("secrets", "demo", "db-creds").is_none());
    assert!(server.get("serviceaccounts", "demo", "bot").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn wide_output_and_categories() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let k = kubectl(&server, "fidelity-wide");
    let wide = ok(&k, &["get", "pods", "-o", "wide"]);
    let mut lines = wide.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED",
            "NODE",
            "READINESS",
            "GATES"
        ]
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        (row[0], row[1], row[2], row[5], row[6]),
        ("web-0", "1/1", "Running", "10.213.0.2", "node-1")
    );
    assert!(
        row[4].ends_with('s'),
        "a fresh pod's age is in seconds: {wide}"
    );
    let all = ok(&k, &["get", "all"]);
    assert!(
        all.contains("pod/web-0") && all.contains("deployment.apps/web"),
        "{all}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn signing_keys_rotate_retire_and_bound_tokens_die_with_their_pod() {
    let server = ApiServer::start(Config {
        issuer: "https://issuer.test".into(),
        // As `--token-success-cache-ttl=0`: every request checks its token (the
        // cache has its own test below).
        token_success_cache_ttl: Duration::ZERO,
        ..Config::default()
    })
    .await
    .unwrap();
    let subject = bot_on_web_0(&server);
    let aud = ["https://issuer.test".to_owned()];
    let client = https_client(server.ca_pem(), false);
    let get = |token: String, path: &'static str| {
        let (client, server) = (&client, &server);
        async move { get_as(client, server, &token, path).await }
    };
    let pods = "/api/v1/namespaces/demo/pods";
    let jwks = "/openid/v1/jwks";
    let admin = server.admin_token().to_owned();

    let old = server.mint_token(&subject, &aud, 3600);
    assert_eq!(get(old.clone(), pods).await.0, 200);
    let (_, discovery) = get(admin.clone(), "/.well-known/openid-configuration").await;
    assert!(
        discovery.contains("\"issuer\":\"https://issuer.test\""),
        "{discovery}"
    );

    server.rotate_signing_key();
    let new = server.mint_token(&subject, &aud, 3600);
    let keys = |body: &str| {
        serde_json::from_str::<Value>(body).unwrap()["keys"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(keys(&get(admin.clone(), jwks).await.1), 2);
    assert_eq!(
        get(old.clone(), pods).await.0,
        200,
        "old keys verify until retired"
    );
    assert_eq!(get(new.clone(), pods).await.0, 200);
    server.retire_old_signing_keys();
    assert_eq!(keys(&get(admin.clone(), jwks).await.1), 1);
    assert_eq!(get(old, pods).await.0, 401);
    assert_eq!(get(new.clone(), pods).await.0, 200);
    assert_eq!(
        get(server.mint_foreign_token(&subject, &aud, 3600), pods)
            .await
            .0,
        401
    );

    // The pod the token is bound to goes (force delete): the token is invalidated.
    let k = kubectl(&server, "fidelity-keys");
    ok(
        &k,
        &["delete", "pod", "web-0", "--grace-period=0", "--force"],
    );
    assert_eq!(get(new, pods).await.0, 401);
}

/// kube-apiserver's token cache (`--token-success-cache-ttl`, 10 s by default): a
/// token that authenticated is taken again without a check, even once its pod is gone,
/// until the TTL passes; a token never seen before is checked. The same cache answers
/// TokenReview. Shortened to 1 s here.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_that_authenticated_is_taken_unchecked_until_the_cache_ttl_passes() {
    assert_eq!(
        Config::default().token_success_cache_ttl,
        Duration::from_secs(10)
    );
    let ttl = Duration::from_secs(1);
    let server = ApiServer::start(Config {
        token_success_cache_ttl: ttl,
        ..Config::default()
    })
    .await
    .unwrap();
    let subject = bot_on_web_0(&server);
    let aud = [kgate_apiserver_double::DEFAULT_ISSUER.to_owned()];
    let used = server.mint_token(&subject, &aud, 3600);
    let unused = server.mint_token(&subject, &aud, 3600);
    let client = https_client(server.ca_pem(), false);
    let pods = "/api/v1/namespaces/demo/pods";
    let review = async |token: &str| review(&client, &server, token).await["authenticated"] == true;

    assert_eq!(get_as(&client, &server, &used, pods).await.0, 200);
    let k = kubectl(&server, "fidelity-token-cache");
    ok(
        &k,
        &["delete", "pod", "web-0", "--grace-period=0", "--force"],
    );
    assert_eq!(
        get_as(&client, &server, &used, pods).await.0,
        200,
        "authenticated before: cached"
    );
    assert!(
        review(&used).await,
        "TokenReview goes through the same cache"
    );
    assert_eq!(
        get_as(&client, &server, &unused, pods).await.0,
        401,
        "never authenticated: checked"
    );
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    assert_eq!(
        get_as(&client, &server, &used, pods).await.0,
        401,
        "checked again once the TTL passed"
    );
    assert!(!review(&used).await);
}

/// `--api-audiences` as a managed cluster sets it (EKS: tokens carry
/// `https://kubernetes.default.svc` under an `oidc.eks` issuer): `kubectl create
/// token` without `--audience` issues a token for the API audience, which works; a
/// token for the issuer alone is a 401; TokenReview without audiences answers for the
/// API audiences.
#[tokio::test(flavor = "multi_thread")]
async fn tokens_authenticate_only_for_the_api_audiences() {
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

    let config = Config::eks_shaped();
    // Tokens for the API audiences, or for the issuer alone.
    let (api, issuer) = (config.api_audiences.clone(), [config.issuer.clone()]);
    let server = ApiServer::start(config).await.unwrap();
    let k = kubectl(&server, "fidelity-api-audiences");
    let issued = ok(&k, &["create", "token", "bot"]).trim().to_owned();
    let payload = issued.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(
        (claims["iss"].as_str(), &claims["aud"]),
        (Some(issuer[0].as_str()), &json!(api))
    );
    let client = https_client(server.ca_pem(), false);
    let pods = "/api/v1/namespaces/demo/pods";
    assert_eq!(get_as(&client, &server, &issued, pods).await.0, 200);
    let for_issuer = server.mint_token(&bot_on_web_0(&server), &issuer, 3600);
    assert_eq!(get_as(&client, &server, &for_issuer, pods).await.0, 401);

    let reviewed = review(&client, &server, &issued).await;
    assert_eq!(reviewed["authenticated"], true, "{reviewed}");
    assert_eq!(reviewed["audiences"], json!(api));
    let reviewed = review(&client, &server, &for_issuer).await;
    assert_eq!(reviewed["authenticated"], false, "{reviewed}");
    let reviewed = review(&client, &server, server.admin_token()).await;
    assert_eq!(reviewed["audiences"], json!(api), "{reviewed}");
}

/// The impersonation filter: the request is handled, and logged, as the impersonated
/// user; an impersonation RBAC does not grant is refused in kube-apiserver's words; a
/// group without a user is a 400.
#[tokio::test(flavor = "multi_thread")]
async fn impersonation_is_authorized_and_the_request_handled_as_the_impersonated_user() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let k = kubectl(&server, "fidelity-impersonate");
    ok(&k, &["get", "pods", "--as=bob", "--as-group=devs"]);
    let seen = server
        .requests()
        .into_iter()
        .rfind(|r| r.path == "/api/v1/namespaces/demo/pods")
        .expect("the list reached the double");
    assert_eq!(seen.user.as_deref(), Some("kubernetes-admin"));
    assert_eq!(seen.impersonated_user.as_deref(), Some("bob"));
    assert_eq!(seen.impersonated_groups, ["devs", "system:authenticated"]);
    // A service account's own groups when none are asked for.
    let who = ok(
        &k,
        &[
            "auth",
            "whoami",
            "--as=system:serviceaccount:ci:deployer",
            "-o",
            "json",
        ],
    );
    let who: Value = serde_json::from_str(&who).unwrap();
    assert_eq!(
        who["status"]["userInfo"]["groups"],
        json!([
            "system:serviceaccounts",
            "system:serviceaccounts:ci",
            "system:authenticated"
        ])
    );

    server.refuse_access("kubernetes-admin", "impersonate", "users");
    let (done, _, err) = tokio::task::block_in_place(|| k.run(&["get", "pods", "--as=bob"]));
    assert!(!done);
    assert!(
        err.contains(
            "users \"bob\" is forbidden: User \"kubernetes-admin\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
        ),
        "{err}"
    );
    // Groups are their own question: still granted.
    server.refuse_access("kubernetes-admin", "impersonate", "groups");
    let (done, _, err) = tokio::task::block_in_place(|| {
        k.run(&[
            "get",
            "pods",
            "--as=system:serviceaccount:ci:deployer",
            "--as-group=devs",
        ])
    });
    assert!(!done);
    assert!(err.contains("groups \"devs\" is forbidden"), "{err}");

    let client = https_client(server.ca_pem(), false);
    let req = http::Request::get(format!("{}/api/v1/namespaces/default/pods", server.url()))
        .header("authorization", format!("Bearer {}", server.admin_token()))
        .header("impersonate-group", "devs")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let response = client.request(req).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::BAD_REQUEST);
    let body = text(response.into_body()).await;
    assert!(body.contains("without impersonating a user"), "{body}");
}
