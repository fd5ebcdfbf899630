//! The API-server double against the kube-rs client, directly (no kgate): paginated
//! lists, raw watches (ADDED, MODIFIED, DELETED, BOOKMARK, 410 Gone), create and
//! delete, the service-account token round trip (TokenRequest, TokenReview, the
//! signature checked against the published JWKS), and server-side apply as a
//! controller sends it (and the apply patches the API server refuses).

use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenReview, TokenReviewSpec},
    core::v1::{ConfigMap, Namespace, Pod, ServiceAccount},
};
use kgate_apiserver_double::{
    ApiServer, Config, Handle,
    client::{kubeconfig, scratch_dir},
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams},
};
use serde_json::{Value, json};

async fn client(server: &Handle, token: &str) -> Client {
    // The kubeconfig names its CA file; the client has read it once it is built.
    let dir = scratch_dir("double-kube");
    let path = kubeconfig(&dir, &server.url(), server.ca_pem(), token);
    let kubeconfig = kube::config::Kubeconfig::read_from(path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    Client::try_from(config).unwrap()
}

fn configmap(name: &str) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"batch": "b"}}, "data": {"k": name}}),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn list_pages_with_limit_and_continue() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let client = client(&server, server.admin_token()).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "paging"}})).unwrap(),
        )
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client, "paging");
    for i in 0..25 {
        cms.create(&PostParams::default(), &configmap(&format!("cm-{i:02}")))
            .await
            .unwrap();
    }

    let (mut names, mut pages, mut token, mut list_rv) = (Vec::new(), 0, None::<String>, None);
    loop {
        let mut params = ListParams::default().limit(10);
        if let Some(t) = &token {
            params = params.continue_token(t);
        }
        let page = cms.list(&params).await.unwrap();
        pages += 1;
        assert!(page.items.len() <= 10);
        list_rv.get_or_insert(page.metadata.resource_version.clone().unwrap());
        names.extend(page.items.into_iter().map(|c| c.metadata.name.unwrap()));
        token = page.metadata.continue_.filter(|c| !c.is_empty());
        if token.is_none() {
            break;
        }
        assert!(
            page.metadata.remaining_item_count.is_some_and(|n| n > 0),
            "a page with a continue token says how many remain"
        );
    }
    let expected: Vec<String> = (0..25).map(|i| format!("cm-{i:02}")).collect();
    assert_eq!((pages, names), (3, expected));

    // Selectors: set-based labels and the metadata.name field.
    let selected = cms
        .list(
            &ListParams::default()
                .labels("batch in (a,b)")
                .fields("metadata.name=cm-07"),
        )
        .await
        .unwrap();
    assert_eq!(selected.items.len(), 1);
    let none = cms
        .list(&ListParams::default().labels("batch!=b"))
        .await
        .unwrap();
    assert!(none.items.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_events_create_and_delete() {
    let server = ApiServer::start(Config {
        bookmark_interval: Duration::from_millis(200),
        ..Config::default()
    })
    .await
    .unwrap();
    let client = client(&server, server.admin_token()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "demo");
    let start = cms.list(&ListParams::default()).await.unwrap();
    let rv = start.metadata.resource_version.unwrap();

    // From the list's resourceVersion: only what happens afterwards.
    let params = WatchParams::default().timeout(20);
    let mut events = cms.watch(&params, &rv).await.unwrap().boxed();
    let created = cms
        .create(&PostParams::default(), &configmap("watched"))
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some());
    let mut changed = created.clone();
    changed.data = Some([("k".to_owned(), "v2".to_owned())].into());
    cms.replace("watched", &PostParams::default(), &changed)
        .await
        .unwrap();
    let deleted = cms
        .delete("watched", &DeleteParams::default())
        .await
        .unwrap();
    // A ConfigMap's storage answers a delete with a Success Status, not the object.
    let status = deleted.right().expect("a Status");
    assert_eq!(
        status.details.map(|d| (d.name, d.kind)),
        Some(("watched".to_owned(), "configmaps".to_owned()))
    );

    let mut seen = Vec::new();
    let mut bookmarks = 0;
    let collect = async {
        while let Some(event) = events.try_next().await.unwrap() {
            match event {
                WatchEvent::Added(c) => seen.push(("ADDED", c.metadata.name.unwrap())),
                WatchEvent::Modified(c) => seen.push(("MODIFIED", c.metadata.name.unwrap())),
                WatchEvent::Deleted(c) => seen.push(("DELETED", c.metadata.name.unwrap())),
                WatchEvent::Bookmark(b) => {
                    assert!(!b.metadata.resource_version.is_empty());
                    bookmarks += 1;
                }
                WatchEvent::Error(e) => panic!("watch error {e:?}"),
            }
            if seen.len() == 3 && bookmarks > 0 {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(15), collect)
        .await
        .expect("events and a bookmark arrive");
    let w = "watched".to_owned();
    assert_eq!(
        seen,
        [
            ("ADDED", w.clone()),
            ("MODIFIED", w.clone()),
            ("DELETED", w)
        ]
    );

    // An optimistic-lock conflict: replacing with the stale resourceVersion.
    let mut stale = created.clone();
    stale.metadata.name = Some("conflicted".into());
    let made = cms.create(&PostParams::default(), &stale).await.unwrap();
    // A replace that changes something (one that changes nothing is not written, as
    // on the real server, and keeps the resourceVersion).
    let mut changed = made.clone();
    changed.data = Some([("k".to_owned(), "changed".to_owned())].into());
    cms.replace("conflicted", &PostParams::default(), &changed)
        .await
        .unwrap();
    let err = cms
        .replace("conflicted", &PostParams::default(), &made)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 409 && s.reason == "Conflict"),
        "{err:?}"
    );

    // Resuming from a resourceVersion the server no longer has: one 410 ERROR event.
    let mut gone = cms
        .watch(&WatchParams::default(), "1")
        .await
        .unwrap()
        .boxed();
    match gone.next().await {
        Some(Ok(WatchEvent::Error(e))) => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"), "{e:?}");
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn token_request_review_and_jwks() {
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};

    let server = ApiServer::start(Config::default()).await.unwrap();
    let admin = client(&server, server.admin_token()).await;
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), "demo");
    let request: TokenRequest = serde_json::from_value(json!({
        "spec": {"audiences": ["kgate"], "expirationSeconds": 3600,
                 "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web-0"}}
    }))
    .unwrap();
    let issued = sas
        .create_token_request("bot", &PostParams::default(), &request)
        .await
        .unwrap();
    let status = issued.status.unwrap();
    assert!(status.expiration_timestamp.0 > jiff_now_plus(3000));
    let token = status.token;

    // TokenReview for the audience it was issued for.
    let reviews: Api<TokenReview> = Api::all(admin.clone());
    let review = |token: &str, audiences: &[&str]| TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_owned()),
            audiences: Some(audiences.iter().map(|a| (*a).to_owned()).collect()),
        },
        ..TokenReview::default()
    };
    let reviewed = reviews
        .create(&PostParams::default(), &review(&token, &["kgate"]))
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(reviewed.authenticated, Some(true), "{reviewed:?}");
    assert_eq!(reviewed.audiences, Some(vec!["kgate".to_owned()]));
    let user = reviewed.user.unwrap();
    assert_eq!(
        user.username.as_deref(),
        Some("system:serviceaccount:demo:bot")
    );
    let groups = user.groups.unwrap();
    for g in [
        "system:serviceaccounts",
        "system:serviceaccounts:demo",
        "system:authenticated",
    ] {
        assert!(groups.iter().any(|x| x == g), "{g} missing from {groups:?}");
    }
    let extra = user.extra.unwrap();
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "demo");
    let pod_uid = pods.get("web-0").await.unwrap().metadata.uid.unwrap();
    assert_eq!(
        extra["authentication.kubernetes.io/pod-uid"],
        vec![pod_uid.clone()]
    );
    assert_eq!(
        extra["authentication.kubernetes.io/node-name"],
        vec!["node-1".to_owned()]
    );
    // Another audience is not authenticated.
    let other = reviews
        .create(&PostParams::default(), &review(&token, &["someone-else"]))
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(other.authenticated, Some(false));

    // The JWT verifies against the key that OIDC discovery points at.
    let discovery: Value = admin
        .request(
            http::Request::get("/.well-known/openid-configuration")
                .body(Vec::new())
                .unwrap(),
        )
        .await
        .unwrap();
    // As kube-apiserver: jwks_uri is the server's own external address (not the
    // issuer's host, which clients outside may not resolve) and the JWKS path.
    let jwks_path = discovery["jwks_uri"]
        .as_str()
        .unwrap()
        .strip_prefix(&server.url())
        .expect("jwks_uri is the API server's address")
        .to_owned();
    assert_eq!(jwks_path, "/openid/v1/jwks");
    let jwks: Value = admin
        .request(http::Request::get(jwks_path).body(Vec::new()).unwrap())
        .await
        .unwrap();
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let (header, claims) = signed.split_once('.').unwrap();
    let header: Value = serde_json::from_slice(&B64.decode(header).unwrap()).unwrap();
    let claims: Value = serde_json::from_slice(&B64.decode(claims).unwrap()).unwrap();
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("the token's kid is in the JWKS");
    assert_eq!(
        (key["kty"].as_str(), header["alg"].as_str()),
        (Some("EC"), Some("ES256"))
    );
    let point = [
        &[4u8][..],
        &B64.decode(key["x"].as_str().unwrap()).unwrap(),
        &B64.decode(key["y"].as_str().unwrap()).unwrap(),
    ]
    .concat();
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point)
        .verify(signed.as_bytes(), &B64.decode(signature).unwrap())
        .expect("the signature verifies against the JWKS");
    assert_eq!(claims["iss"], discovery["issuer"]);
    assert_eq!(claims["aud"], json!(["kgate"]));
    assert_eq!(claims["kubernetes.io"]["pod"]["uid"], json!(pod_uid));
    let (iat, nbf, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["nbf"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert!(nbf <= iat && exp - iat == 3600, "{claims}");

    // A token for another audience is no credential for the API; one issued without
    // audiences is for the API's (the issuer here), and acts as the service account.
    let for_kgate: Api<ConfigMap> = Api::namespaced(client(&server, &token).await, "demo");
    let refused = for_kgate.list(&ListParams::default()).await.unwrap_err();
    assert!(
        matches!(&refused, kube::Error::Api(s) if s.code == 401),
        "{refused:?}"
    );
    let plain: TokenRequest = serde_json::from_value(json!({"spec": {}})).unwrap();
    let api_token = sas
        .create_token_request("bot", &PostParams::default(), &plain)
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    let bot = client(&server, &api_token).await;
    let as_bot: Api<ConfigMap> = Api::namespaced(bot, "demo");
    as_bot.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        server.requests().last().unwrap().user.as_deref(),
        Some("system:serviceaccount:demo:bot")
    );
}

/// Now plus `secs`, as the Timestamp type k8s-openapi uses.
fn jiff_now_plus(secs: i64) -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_secs(secs)
}

/// SubjectAccessReview as kube-apiserver's REST storage answers it, asked with
/// kube-rs: 201 with the spec echoed and no creationTimestamp (never stored), the
/// verdict about `spec.user` (refusals of resources, subresources and non-resource
/// paths), and a 422 `Invalid` for a spec with no attributes and no user or group.
#[tokio::test(flavor = "multi_thread")]
async fn subject_access_reviews_answer_for_the_named_user() {
    use k8s_openapi::api::authorization::v1::SubjectAccessReview;
    let server = ApiServer::start(Config::default()).await.unwrap();
    let reviews: Api<SubjectAccessReview> = Api::all(client(&server, server.admin_token()).await);
    let sa = "system:serviceaccount:kgate-system:kgate-agent";
    server.refuse_access(sa, "create", "tokenreviews");
    server.refuse_access(sa, "patch", "kgatepolicies/status");
    server.refuse_access(sa, "get", "/openid/v1/jwks");
    let ask = |user: &str, attributes: Value| {
        let mut spec = attributes;
        spec["user"] = json!(user);
        spec["groups"] = json!(["system:serviceaccounts", "system:authenticated"]);
        serde_json::from_value::<SubjectAccessReview>(json!({"spec": spec})).unwrap()
    };
    let resource = |verb: &str, group: &str, resource: &str, sub: &str| json!({"resourceAttributes": {"verb": verb, "group": group, "resource": resource, "subresource": sub}});
    let path = |p: &str| json!({"nonResourceAttributes": {"verb": "get", "path": p}});
    let cases = [
        (sa, resource("list", "", "pods", ""), true),
        (
            sa,
            resource("create", "authentication.k8s.io", "tokenreviews", ""),
            false,
        ),
        (
            sa,
            resource("patch", "kgate.io", "kgatepolicies", "status"),
            false,
        ),
        (sa, resource("patch", "kgate.io", "kgatepolicies", ""), true),
        (sa, path("/openid/v1/jwks"), false),
        (sa, path("/.well-known/openid-configuration"), true),
        (
            "someone-else",
            resource("create", "authentication.k8s.io", "tokenreviews", ""),
            true,
        ),
    ];
    for (user, attributes, allowed) in cases {
        let review = reviews
            .create(&PostParams::default(), &ask(user, attributes.clone()))
            .await
            .unwrap();
        let status = review.status.unwrap();
        assert_eq!(status.allowed, allowed, "{user} {attributes}");
        // RBAC has no deny: a refusal is no opinion, with no reason.
        assert_eq!(status.reason.is_some(), allowed, "{user} {attributes}");
        assert_eq!(review.metadata.creation_timestamp, None);
        assert_eq!(review.spec.user.as_deref(), Some(user));
    }

    let invalid: SubjectAccessReview = serde_json::from_value(json!({"spec": {}})).unwrap();
    let error = reviews
        .create(&PostParams::default(), &invalid)
        .await
        .unwrap_err();
    let kube::Error::Api(status) = error else {
        panic!("{error}")
    };
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        status.message,
        "SubjectAccessReview.authorization.k8s.io \"\" is invalid: [spec.resourceAttributes: \
         Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes \
         must be specified, spec.user: Invalid value: \"\": at least one of user or group \
         must be specified]"
    );
}

/// kube-apiserver installs the OIDC discovery endpoints only for an issuer that is
/// an https URL; with a legacy issuer both answer 404 (tokens still work, through
/// TokenReview). `--service-account-jwks-uri` changes what discovery advertises, not
/// where the keys are served.
#[tokio::test(flavor = "multi_thread")]
async fn oidc_discovery_depends_on_the_issuer() {
    let get = async |server: &Handle, path: &str| {
        let client = client(server, server.admin_token()).await;
        client
            .request::<Value>(http::Request::get(path).body(Vec::new()).unwrap())
            .await
    };
    let legacy = ApiServer::start(Config {
        issuer: "kubernetes/serviceaccount".into(),
        ..Config::default()
    })
    .await
    .unwrap();
    for path in ["/.well-known/openid-configuration", "/openid/v1/jwks"] {
        match get(&legacy, path).await {
            Err(kube::Error::Api(status)) => assert_eq!(status.code, 404, "{path}"),
            other => panic!("{path}: {other:?}"),
        }
    }
    let external = ApiServer::start(Config {
        jwks_uri: Some("https://oidc.example.test/keys".into()),
        ..Config::default()
    })
    .await
    .unwrap();
    let discovery = get(&external, "/.well-known/openid-configuration")
        .await
        .unwrap();
    assert_eq!(discovery["jwks_uri"], "https://oidc.example.test/keys");
    let jwks = get(&external, "/openid/v1/jwks").await.unwrap();
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(1));
}

/// What kube-rs sends for server-side apply (a JSON body as `apply-patch+yaml`), and
/// what the API server refuses: no field manager, a version other than the
/// resource's, managed fields in the configuration.
#[tokio::test(flavor = "multi_thread")]
async fn apply_patches_that_the_api_server_refuses() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let client = client(&server, server.admin_token()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "demo");
    let config = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube"}, "data": {"k": "v"}});
    let applied = cms
        .patch(
            "kube",
            &PatchParams::apply("my-controller"),
            &Patch::Apply(&config),
        )
        .await
        .unwrap();
    let fields = applied.metadata.managed_fields.unwrap();
    assert_eq!(fields[0].manager.as_deref(), Some("my-controller"));
    assert_eq!(fields[0].operation.as_deref(), Some("Apply"));

    let refused = |e: kube::Error| match e {
        kube::Error::Api(s) => (s.code, s.message),
        other => panic!("{other}"),
    };
    let no_manager = cms
        .patch("kube", &PatchParams::default(), &Patch::Apply(&config))
        .await
        .unwrap_err();
    assert_eq!(
        refused(no_manager),
        (
            422,
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch".into()
        )
    );
    let mut wrong = config.clone();
    wrong["apiVersion"] = json!("v2");
    let (code, message) = refused(
        cms.patch("kube", &PatchParams::apply("m"), &Patch::Apply(&wrong))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 400);
    assert!(
        message.contains("Incorrect version specified in apply patch"),
        "{message}"
    );
    let mut with_fields = config.clone();
    with_fields["metadata"]["managedFields"] = json!([{"manager": "x"}]);
    assert_eq!(
        refused(
            cms.patch(
                "kube",
                &PatchParams::apply("m"),
                &Patch::Apply(&with_fields)
            )
            .await
            .unwrap_err()
        ),
        (400, "metadata.managedFields must be nil".into())
    );
}

/// kube-rs's streaming list (`watcher::Config::streaming_lists`, the WatchList
/// feature kube-apiserver serves by default since 1.32): every object as an initial
/// event, then the `k8s.io/initial-events-end` bookmark ends the initial state, and
/// changes follow. The options the API server refuses are a 422 naming them.
#[tokio::test(flavor = "multi_thread")]
async fn a_streaming_list_sends_the_state_then_the_initial_events_end_bookmark() {
    use kube::runtime::watcher;

    let server = ApiServer::start(Config::default()).await.unwrap();
    let client = client(&server, server.admin_token()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "demo");
    for name in ["one", "two"] {
        cms.create(&PostParams::default(), &configmap(name))
            .await
            .unwrap();
    }
    let mut events = watcher(cms.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut initial = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), events.try_next())
            .await
            .expect("the initial state ends")
            .unwrap()
            .unwrap();
        match event {
            watcher::Event::Init => {}
            watcher::Event::InitApply(cm) => initial.push(cm.metadata.name.unwrap()),
            watcher::Event::InitDone => break,
            other => panic!("{other:?} before the initial state ended"),
        }
    }
    initial.sort();
    assert_eq!(initial, ["app-config", "one", "two"]);
    cms.create(&PostParams::default(), &configmap("three"))
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), events.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(&event, watcher::Event::Apply(cm) if cm.metadata.name.as_deref() == Some("three")),
        "{event:?}"
    );
    let streamed = server
        .requests()
        .into_iter()
        .any(|r| r.path.ends_with("/configmaps") && r.query.contains("sendInitialEvents=true"));
    assert!(streamed, "kube-rs did not ask for a streaming list");

    // What the API server refuses, with the message it gives.
    let raw = |query: &'static str| {
        let req = http::Request::get(format!("/api/v1/namespaces/demo/configmaps?{query}"))
            .body(Vec::new())
            .unwrap();
        let client = client.clone();
        async move {
            match client.request::<Value>(req).await {
                Err(kube::Error::Api(s)) => (s.code, s.message),
                other => panic!("{query}: {other:?}"),
            }
        }
    };
    assert_eq!(
        raw("watch=true&sendInitialEvents=true&allowWatchBookmarks=true").await,
        (
            422,
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan".into()
        )
    );
    assert_eq!(
        raw("sendInitialEvents=true").await,
        (
            422,
            "ListOptions.meta.k8s.io \"\" is invalid: sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list".into()
        )
    );
}
