//! Recording at level `Request` through a standalone agent in front of the
//! API-server double: kube-rs's JSON writes are recorded with their bodies, a
//! Secret's values masked and nowhere in the log's bytes; kubectl's protobuf writes,
//! a JSON patch of a Secret and an exec stream carry no body, saying why (or, for
//! the stream, nothing).

use std::{fs, time::Duration};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use kgate::record::{event::Event, sessions};
use kgate_tests::{
    apiserver::{ApiServer, Config},
    harness::{Agent, https_client, scratch_dir},
    recorder::eventually,
};

// === level Request ===

#[tokio::test(flavor = "multi_thread")]
async fn request_level_records_request_bodies_masked() {
    use base64::Engine as _;
    let server = ApiServer::start(Config::default()).await.unwrap();
    let dir = scratch_dir("request-level");
    let records = dir.join("records");
    let agent = Agent::standalone_with(
        &server.url(),
        server.ca_pem(),
        server.admin_token(),
        &format!(
            "identity: {{unboundSubjects: [kubernetes-admin]}}\npolicy: {{defaultAction: allow}}\n\
             record: {{dir: '{}', level: Request}}\n",
            records.display()
        ),
    )
    .unwrap();
    // kube-rs writes JSON bodies; kubectl writes built-in kinds as protobuf.
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    use kube::{
        Api,
        api::{Patch, PatchParams, PostParams},
    };
    let client =
        kgate_tests::harness::kube_client(&agent.url(), &agent.ca_pem, server.admin_token()).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "demo");
    let maps: Api<ConfigMap> = Api::namespaced(client, "demo");
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "creds"},
        "data": {"apikey": "a2V5LXZhbHVlLTEyMw=="},
        "stringData": {"password": "hunter2-value"},
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let map: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "settings"},
        "data": {"mode": "fast"},
    }))
    .unwrap();
    maps.create(&PostParams::default(), &map).await.unwrap();
    // A JSON patch (an array of operations), as kubectl patch --type=json sends it.
    let patch = Request::patch(format!(
        "{}/api/v1/namespaces/demo/secrets/creds",
        agent.url()
    ))
    .header("authorization", format!("Bearer {}", server.admin_token()))
    .header("content-type", "application/json-patch+json")
    .body(Full::new(Bytes::from_static(
        br#"[{"op":"replace","path":"/data/password","value":"bmV3LXNlY3JldA=="}]"#,
    )))
    .unwrap();
    let patched = https_client(&agent.ca_pem, true)
        .request(patch)
        .await
        .unwrap();
    assert_eq!(patched.status(), StatusCode::OK);
    // Server-side apply, as a kube-rs controller writes: JSON sent as
    // application/apply-patch+yaml.
    let applied = serde_json::json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "applied"}, "data": {"token": "YXBwbGllZC12YWx1ZQ=="}});
    secrets
        .patch(
            "applied",
            &PatchParams::apply("ci"),
            &Patch::Apply(&applied),
        )
        .await
        .unwrap();
    maps.get("settings").await.unwrap();
    let kubectl = kgate_tests::harness::Kubectl::new(
        scratch_dir("request-level-kubectl"),
        &agent.url(),
        &agent.ca_pem,
        server.admin_token(),
    );
    tokio::task::spawn_blocking(move || {
        kubectl.ok(&["create", "configmap", "from-kubectl", "--from-literal=x=y"]);
        // An upgraded stream at level Request: no body to keep, nothing to say.
        let out = kubectl.ok(&["exec", "web-0", "--", "echo", "streamed"]);
        assert_eq!(out.trim(), "streamed");
    })
    .await
    .unwrap();

    let complete_named = |events: &[Event], verb: &str, resource: &str, name: &str| {
        events
            .iter()
            .find(|e| {
                e.stage == "ResponseComplete"
                    && e.verb == verb
                    && e.object_ref.as_ref().is_some_and(|o| {
                        o.resource == resource && (name.is_empty() || o.name == name)
                    })
            })
            .cloned()
    };
    let complete =
        |events: &[Event], verb: &str, resource: &str| complete_named(events, verb, resource, "");
    let events = eventually("the writes' records", Duration::from_secs(10), async || {
        let events = sessions::load(&records).unwrap().0;
        (complete(&events, "patch", "secrets").is_some()
            && complete_named(&events, "patch", "secrets", "applied").is_some()
            && complete(&events, "get", "configmaps").is_some()
            && events
                .iter()
                .filter(|e| e.stage == "ResponseComplete" && e.verb == "create")
                .count()
                == 3
            && events.iter().any(|e| e.stage == "ResponseStarted"))
        .then_some(events)
    })
    .await;
    assert!(
        events.iter().all(|e| e.level == "Request"),
        "every event at level Request"
    );

    let secret = complete(&events, "create", "secrets").unwrap();
    let object = secret.request_object.clone().unwrap_or_else(|| {
        panic!(
            "the Secret's body is not recorded: {:?}",
            secret.annotations
        )
    });
    assert_eq!(object["kind"], "Secret");
    assert_eq!(object["metadata"]["name"], "creds");
    assert_eq!(object["data"]["apikey"], kgate::mask::MASKED_BASE64);
    assert_eq!(object["stringData"]["password"], kgate::mask::MASKED_TEXT);
    let map = events
        .iter()
        .find(|e| {
            e.stage == "ResponseComplete"
                && e.verb == "create"
                && e.object_ref
                    .as_ref()
                    .is_some_and(|o| o.resource == "configmaps")
                && e.request_object.is_some()
        })
        .cloned()
        .expect("the kube-rs ConfigMap's body is recorded");
    assert_eq!(
        map.request_object.expect("the ConfigMap's body")["data"]["mode"],
        "fast"
    );
    let patch = complete(&events, "patch", "secrets").unwrap();
    assert_eq!(
        patch.request_object, None,
        "a JSON patch of a Secret cannot be masked by field"
    );
    let why = patch
        .annotation(kgate::record::event::REQUEST_OBJECT)
        .unwrap_or_default();
    assert!(why.contains("not an object"), "{why:?}");
    let protobuf = events
        .iter()
        .filter(|e| e.stage == "ResponseComplete" && e.verb == "create")
        .find_map(|e| e.annotation(kgate::record::event::REQUEST_OBJECT))
        .expect("kubectl's protobuf create says why it has no requestObject");
    assert_eq!(protobuf, "omitted: not JSON or YAML");
    let apply = complete_named(&events, "patch", "secrets", "applied").unwrap();
    let object = apply
        .request_object
        .clone()
        .unwrap_or_else(|| panic!("the apply's body is not recorded: {:?}", apply.annotations));
    assert_eq!(
        (&object["metadata"]["name"], &object["data"]["token"]),
        (
            &serde_json::json!("applied"),
            &serde_json::json!(kgate::mask::MASKED_BASE64)
        )
    );
    let read = complete(&events, "get", "configmaps").unwrap();
    assert_eq!(
        (
            read.request_object.as_ref(),
            read.annotation(kgate::record::event::REQUEST_OBJECT)
        ),
        (None, None)
    );
    let exec = events
        .iter()
        .find(|e| {
            e.stage == "ResponseStarted"
                && e.object_ref
                    .as_ref()
                    .is_some_and(|o| o.subresource == "exec")
        })
        .expect("the exec's record");
    assert_eq!(
        (
            exec.request_object.as_ref(),
            exec.annotation(kgate::record::event::REQUEST_OBJECT)
        ),
        (None, None)
    );
    // Nothing of the Secret's values anywhere in the log's bytes.
    let secrets = [
        "hunter2-value".to_owned(),
        base64::engine::general_purpose::STANDARD.encode("hunter2-value"),
        "bmV3LXNlY3JldA==".to_owned(),
        "a2V5LXZhbHVlLTEyMw==".to_owned(),
        "key-value-123".to_owned(),
        "YXBwbGllZC12YWx1ZQ==".to_owned(),
        "applied-value".to_owned(),
    ];
    for entry in fs::read_dir(&records).unwrap() {
        let bytes = fs::read(entry.unwrap().path()).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{secret} is in the record log"
            );
        }
    }
}

// === level RequestResponse ===

/// Level `RequestResponse`: a Secret read comes back masked and is recorded as the
/// client got it (the real values nowhere in the log), a list and a ConfigMap are
/// recorded whole, a watch carries no body, and a body over the limit says why.
#[tokio::test(flavor = "multi_thread")]
async fn request_response_level_records_what_the_client_got() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    server.insert_configmaps("demo", 1, 64 << 10);
    let dir = scratch_dir("response-level");
    let records = dir.join("records");
    let agent = Agent::standalone_with(
        &server.url(),
        server.ca_pem(),
        server.admin_token(),
        &format!(
            "identity: {{unboundSubjects: [kubernetes-admin]}}\npolicy: {{defaultAction: allow}}\n\
             record: {{dir: '{}', level: RequestResponse, responseObjectMaxBytes: 16384}}\n",
            records.display()
        ),
    )
    .unwrap();
    let client = https_client(&agent.ca_pem, true);
    for path in [
        "/api/v1/namespaces/demo/secrets/db-creds",
        "/api/v1/namespaces/demo/configmaps/app-config",
        "/api/v1/namespaces/demo/pods",
        "/api/v1/namespaces/demo/configmaps",
        "/api/v1/namespaces/demo/pods?watch=true&timeoutSeconds=1",
    ] {
        let req = Request::get(format!("{}{path}", agent.url()))
            .header("authorization", format!("Bearer {}", server.admin_token()))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = client.request(req).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        kgate_tests::harness::text(response.into_body()).await;
    }
    let complete = |events: &[Event], verb: &str, resource: &str, name: &str| {
        events
            .iter()
            .find(|e| {
                e.verb == verb
                    && e.stage != "RequestReceived"
                    && e.object_ref
                        .as_ref()
                        .is_some_and(|o| o.resource == resource && o.name == name)
            })
            .cloned()
    };
    let events = eventually("the reads' records", Duration::from_secs(10), async || {
        let events = sessions::load(&records).unwrap().0;
        (complete(&events, "watch", "pods", "").is_some()
            && complete(&events, "list", "configmaps", "").is_some())
        .then_some(events)
    })
    .await;
    assert!(events.iter().all(|e| e.level == "RequestResponse"));

    let secret = complete(&events, "get", "secrets", "db-creds").unwrap();
    let object = secret
        .response_object
        .clone()
        .unwrap_or_else(|| panic!("no responseObject: {:?}", secret.annotations));
    assert_eq!(object["kind"], "Secret");
    assert_eq!(object["data"]["password"], "a2dhdGU6bWFza2Vk", "{object}");
    let map = complete(&events, "get", "configmaps", "app-config").unwrap();
    assert_eq!(map.response_object.unwrap()["data"]["mode"], "demo");
    let pods = complete(&events, "list", "pods", "").unwrap();
    assert_eq!(
        pods.response_object.as_ref().map(|o| o["kind"].clone()),
        Some("PodList".into()),
        "{:?}",
        pods.annotations
    );
    let watch = complete(&events, "watch", "pods", "").unwrap();
    assert!(
        watch.response_object.is_none()
            && !watch.annotations.contains_key("kgate.io/response-object")
    );
    let big = complete(&events, "list", "configmaps", "").unwrap();
    assert!(big.response_object.is_none());
    assert!(
        big.annotations["kgate.io/response-object"]
            .contains("larger than record.responseObjectMaxBytes"),
        "{:?}",
        big.annotations
    );
    // The Secret's real values are nowhere in the log's bytes.
    let mut raw = Vec::new();
    for entry in fs::read_dir(&records).unwrap() {
        raw.extend(fs::read(entry.unwrap().path()).unwrap());
    }
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.contains("a2dhdGU6bWFza2Vk"));
    assert!(
        !raw.contains("czNjcjN0LXBhc3N3b3Jk"),
        "the Secret's value leaked into the log"
    );
}
