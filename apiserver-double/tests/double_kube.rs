//! The API-server double against the kube-rs client, directly (no kgate): paginated
//! lists, raw watches (ADDED, MODIFIED, DELETED, BOOKMARK, 410 Gone), create and
//! delete, and the service-account token round trip (TokenRequest, TokenReview,
//! the signature checked against the published JWKS).

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
    api::{DeleteParams, ListParams, PostParams, WatchEvent, WatchParams},
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
    let jwks_path = discovery["jwks_uri"]
        .as_str()
        .unwrap()
        .strip_prefix(discovery["issuer"].as_str().unwrap())
        .expect("jwks_uri lives under the issuer")
        .to_owned();
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

    // The issued token is itself a credential, for the service account.
    let bot = client(&server, &token).await;
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
