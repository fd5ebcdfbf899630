//! Table-driven tests of the masker: every input is also fed split at every byte and
//! one byte at a time, and must give the same output.

use crate::mask::config::DEFAULT_MAX_OBJECT_BYTES;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use serde_json::{Value, json};

use super::*;
use crate::{body, request_info::RequestInfo};

const SECRET_VALUE: &str = "czNjcjN0";
const PLAIN_VALUE: &str = "hunter2";

fn masker(extra: &str) -> Masker {
    let config: MaskConfig = serde_yaml::from_str(if extra.is_empty() { "{}" } else { extra })
        .expect("mask config parses");
    Masker::new(&config).expect("mask config compiles")
}

fn info(method: &str, uri: &str) -> RequestInfo {
    RequestInfo::parse(
        &Method::from_bytes(method.as_bytes()).unwrap(),
        &uri.parse::<Uri>().unwrap(),
    )
    .unwrap()
}

fn plan(masker: &Masker, method: &str, uri: &str) -> Plan {
    masker.plan(&info(method, uri), "alice").expect("planned")
}

/// Feeds `input` in `chunks` (split points), then finishes.
fn feed(scanner: &mut Scanner, input: &[u8], splits: &[usize]) -> (Vec<u8>, Result<(), MaskError>) {
    let mut out = Vec::new();
    let mut from = 0;
    for &to in splits.iter().chain(std::iter::once(&input.len())) {
        if let Err(e) = scanner.feed(&input[from..to], &mut out) {
            return (out, Err(e));
        }
        from = to;
    }
    let done = scanner.finish();
    (out, done)
}

/// Masks `input` whole, split at every byte, and byte by byte: all must agree.
fn mask_all_ways(plan: &Plan, input: &str) -> Result<Value, String> {
    let input = input.as_bytes();
    let (whole, done) = feed(&mut plan.scanner(plan.is_watch()), input, &[]);
    for at in 1..input.len() {
        let (out, split_done) = feed(&mut plan.scanner(plan.is_watch()), input, &[at]);
        assert_eq!(out, whole, "split at {at} differs");
        assert_eq!(split_done.is_ok(), done.is_ok(), "split at {at}");
    }
    let every: Vec<usize> = (1..input.len()).collect();
    let (out, bytewise_done) = feed(&mut plan.scanner(plan.is_watch()), input, &every);
    assert_eq!(out, whole, "byte by byte differs");
    assert_eq!(bytewise_done.is_ok(), done.is_ok());
    done.map_err(|e| e.to_string())?;
    // On the raw bytes: a parser would hide a leak in a duplicate key.
    let raw = String::from_utf8_lossy(&whole);
    assert!(
        !raw.contains(SECRET_VALUE) && !raw.contains(PLAIN_VALUE),
        "a value leaked: {raw}"
    );
    if plan.is_watch() {
        let text = String::from_utf8(whole).unwrap();
        assert!(text.ends_with('\n') || text.is_empty(), "{text}");
        Ok(Value::Array(
            text.lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect(),
        ))
    } else {
        Ok(serde_json::from_slice(&whole).expect("masked output is JSON"))
    }
}

fn secret(name: &str) -> Value {
    json!({"metadata": {"name": name, "annotations": {
            LAST_APPLIED: format!("{{\"data\":{{\"password\":\"{SECRET_VALUE}\"}}}}"),
            "team": "db"}},
        "type": "Opaque",
        "data": {"password": SECRET_VALUE, "we\"ird}]": SECRET_VALUE},
        "stringData": {"token": PLAIN_VALUE}})
}

fn masked_secret(name: &str) -> Value {
    // The last-applied annotation keeps its keys, its values masked.
    json!({"metadata": {"name": name, "annotations": {
            LAST_APPLIED: format!("{{\"data\":{{\"password\":\"{MASKED_BASE64}\"}}}}"),
            "team": "db"}},
        "type": "Opaque",
        "data": {"password": MASKED_BASE64, "we\"ird}]": MASKED_BASE64},
        "stringData": {"token": MASKED_TEXT}})
}

fn with_kind(mut v: Value, kind: &str) -> Value {
    v["kind"] = json!(kind);
    v["apiVersion"] = json!("v1");
    v
}

#[test]
fn secrets_are_masked_in_every_response_shape() {
    let m = masker("");
    let table = |object: Value| {
        json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": "7"},
        "columnDefinitions": [{"name": "Name", "type": "string"}],
        "rows": [{"cells": ["db", "Opaque", 2, "1d"], "object": object}]})
    };
    let partial = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
        "metadata": {"name": "db", "annotations": {LAST_APPLIED: SECRET_VALUE}}});
    let partial_masked = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
        "metadata": {"name": "db", "annotations": {LAST_APPLIED: MASKED_TEXT}}});
    let bookmark = json!({"type": "BOOKMARK", "object": {"kind": "Secret", "apiVersion": "v1",
        "metadata": {"resourceVersion": "12", "annotations": {"k8s.io/initial-events-end": "true"}}}});
    let error = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1",
        "status": "Failure", "message": "too old resource version", "reason": "Expired", "code": 410}});
    let list = |items: Vec<Value>| {
        json!({"kind": "SecretList", "apiVersion": "v1",
        "metadata": {"resourceVersion": "9"}, "items": items})
    };
    let cases: Vec<(&str, &str, &str, String, Value)> = vec![
        ("get", "GET", "/api/v1/namespaces/demo/secrets/db",
            with_kind(secret("db"), "Secret").to_string(),
            with_kind(masked_secret("db"), "Secret")),
        ("create answer, pretty-printed", "POST", "/api/v1/namespaces/demo/secrets",
            serde_json::to_string_pretty(&with_kind(secret("db"), "Secret")).unwrap(),
            with_kind(masked_secret("db"), "Secret")),
        ("list", "GET", "/api/v1/namespaces/demo/secrets",
            list(vec![secret("a"), secret("b")]).to_string(),
            list(vec![masked_secret("a"), masked_secret("b")])),
        ("empty list", "GET", "/api/v1/secrets",
            list(vec![]).to_string(), list(vec![])),
        ("list with members after items", "DELETE", "/api/v1/namespaces/demo/secrets",
            r#"{"kind":"SecretList","items":[{"data":{"k":"czNjcjN0"}}] , "metadata":{"continue":"x"}}"#.into(),
            json!({"kind": "SecretList", "items": [{"data": {"k": MASKED_BASE64}}], "metadata": {"continue": "x"}})),
        ("table of metadata", "GET", "/api/v1/namespaces/demo/secrets",
            table(partial.clone()).to_string(), table(partial_masked.clone())),
        ("table of objects", "GET", "/api/v1/namespaces/demo/secrets",
            table(with_kind(secret("db"), "Secret")).to_string(),
            table(with_kind(masked_secret("db"), "Secret"))),
        ("error Status", "GET", "/api/v1/namespaces/demo/secrets/nope",
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}).to_string(),
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404})),
        ("escapes and unicode", "GET", "/api/v1/namespaces/demo/secrets/db",
            r#"{"kind":"Secret","metadata":{"name":"d\"b\\","labels":{"x":"\u00e9}]\\"}},"data":{"a\\\"":"czNjcjN0"}}"#.into(),
            json!({"kind": "Secret", "metadata": {"name": "d\"b\\", "labels": {"x": "é}]\\"}}, "data": {"a\\\"": MASKED_BASE64}})),
        ("a second items member is never streamed past", "GET", "/api/v1/secrets",
            r#"{"items":[{"data":{"k":"czNjcjN0"}}],"kind":"SecretList","items":[{"data":{"j":"czNjcjN0"}}]}"#.into(),
            json!({"kind": "SecretList", "items": [{"data": {"j": MASKED_BASE64}}]})),
        ("an escaped items key before the real one", "GET", "/api/v1/secrets",
            r#"{"kind":"SecretList","it\u0065ms":[{"data":{"k":"czNjcjN0"}}],"items":[]}"#.into(),
            json!({"kind": "SecretList", "items": []})),
        ("watch", "GET", "/api/v1/namespaces/demo/secrets?watch=true",
            format!("{}\n{}\n{}\n{}\n",
                json!({"type": "ADDED", "object": with_kind(secret("a"), "Secret")}),
                bookmark,
                json!({"type": "MODIFIED", "object": table(partial)}),
                error),
            json!([{"type": "ADDED", "object": with_kind(masked_secret("a"), "Secret")},
                bookmark, {"type": "MODIFIED", "object": table(partial_masked)}, error])),
        ("watch events without newlines", "GET", "/api/v1/watch/secrets",
            format!("{}{}", json!({"type": "DELETED", "object": secret("a")}),
                json!({"type": "ADDED", "object": secret("b")})),
            json!([{"type": "DELETED", "object": masked_secret("a")},
                {"type": "ADDED", "object": masked_secret("b")}])),
        ("quiet watch", "GET", "/api/v1/secrets?watch=1", String::new(), json!([])),
    ];
    for (name, method, uri, input, want) in cases {
        let plan = plan(&m, method, uri);
        let got = mask_all_ways(&plan, &input).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, want, "{name}");
        let text = got.to_string();
        assert!(
            !text.contains(SECRET_VALUE) && !text.contains(PLAIN_VALUE),
            "{name}: {text}"
        );
    }
}

#[test]
fn configured_rules_mask_configmaps_env_and_annotations() {
    let m = masker(
        "configMapKeys: ['^db_', 'secret']\nenvNames: [PASSWORD|TOKEN|KEY]\nannotations: [example.com/credentials]\n",
    );
    let env = || {
        json!([{"name": "DB_PASSWORD", "value": PLAIN_VALUE}, {"name": "MODE", "value": "demo"},
        {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}])
    };
    let env_masked = json!([{"name": "DB_PASSWORD", "value": MASKED_TEXT}, {"name": "MODE", "value": "demo"},
        {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]);
    let spec = |env: Value| {
        json!({"containers": [{"name": "app", "env": env.clone()}],
        "initContainers": [{"name": "init", "env": env}]})
    };
    let applied = json!({LAST_APPLIED: PLAIN_VALUE, "keep": "me"});
    let cases: Vec<(&str, Value, Value)> = vec![
        (
            "/api/v1/namespaces/demo/configmaps/app",
            json!({"kind": "ConfigMap", "metadata": {"annotations": applied},
                "data": {"db_url": PLAIN_VALUE, "mode": "demo", "my_secret": PLAIN_VALUE},
                "binaryData": {"secret.bin": SECRET_VALUE}}),
            // Not JSON, so it cannot be masked inside: replaced whole.
            json!({"kind": "ConfigMap", "metadata": {"annotations": {"keep": "me", LAST_APPLIED: MASKED_TEXT}},
                "data": {"db_url": MASKED_TEXT, "mode": "demo", "my_secret": MASKED_TEXT},
                "binaryData": {"secret.bin": MASKED_BASE64}}),
        ),
        (
            "/api/v1/namespaces/demo/pods/web-0",
            json!({"kind": "Pod", "spec": spec(env())}),
            json!({"kind": "Pod", "spec": spec(env_masked.clone())}),
        ),
        (
            "/api/v1/namespaces/demo/pods/web-0/status",
            json!({"kind": "Pod", "spec": spec(env())}),
            json!({"kind": "Pod", "spec": spec(env_masked.clone())}),
        ),
        (
            "/apis/apps/v1/namespaces/demo/deployments",
            json!({"kind": "DeploymentList", "items": [{"spec": {"template": {"spec": spec(env())}}}]}),
            json!({"kind": "DeploymentList", "items": [{"spec": {"template": {"spec": spec(env_masked.clone())}}}]}),
        ),
        (
            "/apis/batch/v1/namespaces/demo/cronjobs/nightly",
            json!({"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": {"spec": spec(env())}}}}}),
            json!({"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": {"spec": spec(env_masked)}}}}}),
        ),
        (
            "/api/v1/namespaces/demo/services/web",
            json!({"kind": "Service", "metadata": {"annotations": {"example.com/credentials": PLAIN_VALUE, LAST_APPLIED: "{}"}}}),
            json!({"kind": "Service", "metadata": {"annotations": {"example.com/credentials": MASKED_TEXT, LAST_APPLIED: "{}"}}}),
        ),
    ];
    for (uri, input, want) in cases {
        let plan = plan(&m, "GET", uri);
        let got = mask_all_ways(&plan, &input.to_string()).unwrap_or_else(|e| panic!("{uri}: {e}"));
        assert_eq!(got, want, "{uri}");
    }
}

#[test]
fn plans_cover_object_responses_of_masked_resources() {
    let none = masker("");
    let rules = masker(
        "configMapKeys: [x]\nenvNames: [TOKEN]\nunmaskedSubjects: ['system:serviceaccount:vault:*']\n",
    );
    let annotations = masker("annotations: [a]\n");
    let cases: Vec<(&Masker, &str, &str, &str, bool)> = vec![
        (
            &none,
            "GET",
            "/api/v1/namespaces/demo/secrets/db",
            "alice",
            true,
        ),
        (&none, "GET", "/api/v1/watch/secrets", "alice", true),
        (
            &none,
            "POST",
            "/api/v1/namespaces/demo/secrets",
            "alice",
            true,
        ),
        (
            &none,
            "PATCH",
            "/api/v1/namespaces/demo/secrets/db",
            "alice",
            true,
        ),
        (
            &none,
            "DELETE",
            "/api/v1/namespaces/demo/secrets",
            "alice",
            true,
        ),
        (
            &none,
            "GET",
            "/api/v1/namespaces/demo/configmaps/app",
            "alice",
            false,
        ),
        (&none, "GET", "/api/v1/namespaces/demo/pods", "alice", false),
        (&none, "GET", "/apis/example.com/v1/secrets", "alice", false),
        (&none, "GET", "/api/v1", "alice", false),
        (
            &rules,
            "GET",
            "/api/v1/namespaces/demo/configmaps/app",
            "alice",
            true,
        ),
        (&rules, "GET", "/api/v1/namespaces/demo/pods", "alice", true),
        (
            &rules,
            "GET",
            "/api/v1/namespaces/demo/pods/web-0/log",
            "alice",
            false,
        ),
        (
            &rules,
            "POST",
            "/api/v1/namespaces/demo/pods/web-0/exec",
            "alice",
            false,
        ),
        (
            &rules,
            "GET",
            "/apis/apps/v1/namespaces/demo/deployments/web/status",
            "alice",
            true,
        ),
        (
            &rules,
            "GET",
            "/apis/apps/v1/namespaces/demo/deployments/web/scale",
            "alice",
            false,
        ),
        (
            &rules,
            "GET",
            "/api/v1/namespaces/demo/services",
            "alice",
            false,
        ),
        (
            &rules,
            "GET",
            "/api/v1/namespaces/demo/secrets/db",
            "system:serviceaccount:vault:agent",
            false,
        ),
        (
            &rules,
            "GET",
            "/api/v1/namespaces/demo/secrets/db",
            "system:serviceaccount:other:agent",
            true,
        ),
        (
            &annotations,
            "GET",
            "/api/v1/namespaces/demo/services",
            "alice",
            true,
        ),
        (
            &annotations,
            "GET",
            "/api/v1/namespaces/demo/pods/web-0/log",
            "alice",
            false,
        ),
    ];
    for (masker, method, uri, user, want) in cases {
        assert_eq!(
            masker.plan(&info(method, uri), user).is_some(),
            want,
            "{method} {uri} as {user}"
        );
    }
}

#[test]
fn bad_configs_name_the_field() {
    let cases = [
        ("configMapKeys: ['(']", "mask.configMapKeys"),
        ("envNames: ['']", "mask.envNames"),
        ("unmaskedSubjects: [' ']", "mask.unmaskedSubjects"),
        ("maxObjectBytes: 0", "mask.maxObjectBytes"),
    ];
    for (text, field) in cases {
        let config: MaskConfig = serde_yaml::from_str(text).unwrap();
        let err = Masker::new(&config).unwrap_err();
        assert_eq!(err.field, field, "{text}");
    }
    assert!(serde_yaml::from_str::<MaskConfig>("secretz: true").is_err());
    let agent = "upstream: {server: 'https://a:1'}\nredirect: {ipv4: 10.0.0.5}\n\
                 tls: {certFile: /c, keyFile: /k}\nidentity: {nodeName: n1}\n";
    let err = crate::config::Config::parse(&format!("{agent}mask: {{envNames: ['[']}}\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("mask.envNames"), "{err}");
    let ok = crate::config::Config::parse(agent).unwrap();
    assert_eq!(ok.mask.max_object_bytes, DEFAULT_MAX_OBJECT_BYTES);
}

#[test]
fn broken_responses_fail_and_never_leak() {
    let m = masker("");
    let list = plan(&m, "GET", "/api/v1/secrets");
    let watch = plan(&m, "GET", "/api/v1/secrets?watch=true");
    let get = plan(&m, "GET", "/api/v1/namespaces/demo/secrets/db");
    let valid_list = json!({"kind": "SecretList", "items": [secret("a"), secret("b")]}).to_string();
    let valid_watch = format!("{}\n", json!({"type": "ADDED", "object": secret("a")}));
    // Every strict prefix of a valid response is truncated.
    for (plan, input) in [(&list, &valid_list), (&watch, &valid_watch)] {
        for end in 1..input.len() - 1 {
            let (out, done) = feed(
                &mut plan.scanner(plan.is_watch()),
                &input.as_bytes()[..end],
                &[],
            );
            assert!(done.is_err(), "prefix of {end} bytes accepted");
            let out = String::from_utf8_lossy(&out);
            assert!(
                !out.contains(SECRET_VALUE) && !out.contains(PLAIN_VALUE),
                "{out}"
            );
        }
    }
    let cases: Vec<(&Plan, String, &str)> = vec![
        (
            &list,
            r#"{"kind":"SecretList","items":[{"data":{"a":"czNjcjN0"}]}"#.into(),
            "not valid JSON",
        ),
        (
            &list,
            r#"{"kind":"SecretList","items":[{"data":{"a":"czNjcjN0"}},]}"#.into(),
            "unexpected byte",
        ),
        (
            &list,
            r#"{"kind":"SecretList","items":[{"a":1}{"b":2}]}"#.into(),
            "unexpected byte",
        ),
        (
            &list,
            r#"{"kind":"SecretList","items":[],"items":[{"data":{"a":"czNjcjN0"}}]}"#.into(),
            "second",
        ),
        (
            &list,
            r#"{"kind":"SecretList","items":["czNjcjN0"]}"#.into(),
            "unexpected byte",
        ),
        (
            &list,
            r#"{"kind":"SecretList","items":[{"data":{"a":"czNjcjN0"}}],}"#.into(),
            "unexpected byte",
        ),
        (
            &get,
            r#"{"kind":"Secret"} {"data":{"a":"czNjcjN0"}}"#.into(),
            "unexpected byte",
        ),
        // Found by the fuzzer: bytes between the streamed array's key and its `[`
        // were skipped, so malformed JSON came out repaired instead of refused.
        (
            &list,
            r#"{"kind":"Table","rows"=:[{"object":{"data":{"a":"czNjcjN0"}}}]}"#.into(),
            "unexpected byte",
        ),
        (
            &list,
            r#"{"kind":"SecretList","items" x :[{"data":{"a":"czNjcjN0"}}]}"#.into(),
            "unexpected byte",
        ),
        (
            &list,
            r#"{"kind":"SecretList","items"::[{"data":{"a":"czNjcjN0"}}]}"#.into(),
            "unexpected byte",
        ),
        // Found by the fuzzer: a list whose members after its items repeat its
        // `kind`. A client that keeps the last copy of a key reads one Secret, with
        // the unmasked `data` that follows.
        (
            &list,
            r#"{"kind":"SecretList","items":[],"kind":"Secret","data":{"a":"czNjcjN0"}}"#.into(),
            "repeats its member \"kind\"",
        ),
        (&get, r#"["czNjcjN0"]"#.into(), "unexpected byte"),
        (
            &get,
            r#"{"kind":"Secret","data":{"a":"czNjcjN0"}}}"#.into(),
            "unexpected byte",
        ),
        (
            &get,
            r#"{"kind":"Secret","data":{"a":czNjcjN0}}"#.into(),
            "not valid JSON",
        ),
        (
            &get,
            r#"{"kind":"Secret","data":{"a":"czNjcjN0"#.into(),
            "ended inside",
        ),
        (&get, String::new(), "ended inside"),
        (
            &watch,
            r#"{"type":"ADDED","object":{"data":{"a":"czNjcjN0"}}} ]"#.into(),
            "unexpected byte",
        ),
        (
            &watch,
            r#"{"type":"ADDED","object":{"data":{"a":"czNjcjN0""#.into(),
            "ended inside",
        ),
    ];
    for (plan, input, want) in cases {
        let err = mask_all_ways(plan, &input).expect_err(&input);
        assert!(err.contains(want), "{input}: {err}");
        let (out, _) = feed(&mut plan.scanner(plan.is_watch()), input.as_bytes(), &[]);
        assert!(
            !String::from_utf8_lossy(&out).contains(SECRET_VALUE),
            "{input}"
        );
    }
    // A unit over the cap fails, even inside one long string.
    let small = Masker::new(&MaskConfig {
        max_object_bytes: 100,
        ..MaskConfig::default()
    })
    .unwrap();
    let get = plan(&small, "GET", "/api/v1/namespaces/demo/secrets/db");
    let big = json!({"data": {"a": "x".repeat(200)}}).to_string();
    assert!(
        mask_all_ways(&get, &big)
            .unwrap_err()
            .contains("maxObjectBytes")
    );
}

#[test]
fn a_long_list_is_masked_with_bounded_buffering() {
    let m = masker("");
    let plan = plan(&m, "GET", "/api/v1/secrets");
    let item = |i: usize| json!({"metadata": {"name": format!("s-{i}")}, "data": {"blob": "QUFB".repeat(256)}});
    let item_len = item(1999).to_string().len();
    let mut input =
        String::from(r#"{"kind":"SecretList","apiVersion":"v1","metadata":{},"items":["#);
    for i in 0..2000 {
        if i > 0 {
            input.push(',');
        }
        input.push_str(&item(i).to_string());
    }
    input.push_str("]}");
    let mut scanner = plan.scanner(false);
    let (mut out, mut peak, mut first_output_at) = (Vec::new(), 0, None);
    for (n, chunk) in input.as_bytes().chunks(4093).enumerate() {
        scanner.feed(chunk, &mut out).unwrap();
        peak = peak.max(scanner.buffered());
        if first_output_at.is_none() && !out.is_empty() {
            first_output_at = Some(n);
        }
    }
    scanner.finish().unwrap();
    assert!(
        peak <= item_len,
        "buffered {peak} bytes for items of {item_len}"
    );
    assert_eq!(
        first_output_at,
        Some(0),
        "output starts with the first chunk"
    );
    let list: Value = serde_json::from_slice(&out).unwrap();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2000);
    assert!(items.iter().all(|i| i["data"]["blob"] == MASKED_BASE64));
    assert_eq!(items[1999]["metadata"]["name"], "s-1999");
}

#[test]
fn negotiation_asks_for_the_clients_json_alternatives() {
    let m = masker("");
    let get = plan(&m, "GET", "/api/v1/namespaces/demo/secrets/db");
    let cases: Vec<(Option<&str>, Result<&str, ()>)> = vec![
        (
            Some("application/vnd.kubernetes.protobuf,application/json"),
            Ok("application/json"),
        ),
        (
            Some(
                "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
            ),
            Ok("application/json;as=Table;v=v1;g=meta.k8s.io,application/json"),
        ),
        (
            Some("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"),
            Ok("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"),
        ),
        (None, Ok("application/json")),
        (Some("*/*"), Ok("application/json")),
        (
            Some("application/yaml, application/*;q=0.5"),
            Ok("application/json;q=0.5"),
        ),
        (Some("application/vnd.kubernetes.protobuf"), Err(())),
        (Some("application/yaml"), Err(())),
        (
            Some("application/json;q=0, application/vnd.kubernetes.protobuf"),
            Err(()),
        ),
    ];
    for (accept, want) in cases {
        let mut headers = HeaderMap::new();
        if let Some(accept) = accept {
            headers.insert("accept", HeaderValue::from_str(accept).unwrap());
        }
        headers.insert("accept-encoding", HeaderValue::from_static("gzip"));
        match (negotiate(&get, &mut headers), want) {
            (Ok(()), Ok(want)) => {
                assert_eq!(headers["accept"], want, "{accept:?}");
                assert!(headers.get("accept-encoding").is_none());
            }
            (Err(status), Err(())) => {
                assert_eq!(status.code, 406, "{accept:?}");
                assert!(
                    status.message.contains("secrets") && status.message.contains("JSON"),
                    "{}",
                    status.message
                );
            }
            (got, want) => panic!("{accept:?}: got {got:?}, want {want:?}"),
        }
    }
}

fn upstream(content_type: &str, chunks: Vec<&'static str>) -> Response<body::Body> {
    let stream = futures_util::stream::iter(
        chunks
            .into_iter()
            .map(|c| Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from(c)))),
    );
    let mut response = Response::new(body::stream(http_body_util::StreamBody::new(stream)));
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_str(content_type).unwrap());
    response
        .headers_mut()
        .insert("content-length", HeaderValue::from_static("999"));
    response
}

#[tokio::test]
async fn responses_that_cannot_be_masked_are_refused() {
    let m = masker("");
    let get = plan(&m, "GET", "/api/v1/namespaces/demo/secrets/db");
    let list = plan(&m, "GET", "/api/v1/secrets");
    let raw = r#"{"kind":"Secret","data":{"a":"czNjcjN0"}}"#;
    // Not JSON, or compressed: 502 before any byte.
    let protobuf = upstream("application/vnd.kubernetes.protobuf", vec!["k8s\0czNjcjN0"]);
    let status = mask_response(&get, protobuf).await.unwrap_err();
    assert_eq!(status.code, 502);
    assert!(status.message.contains("protobuf"), "{}", status.message);
    let mut gzip = upstream("application/json", vec![raw]);
    gzip.headers_mut()
        .insert("content-encoding", HeaderValue::from_static("gzip"));
    assert_eq!(mask_response(&get, gzip).await.unwrap_err().code, 502);
    // Malformed before the first masked byte: a 502 Status.
    let broken = upstream(
        "application/json",
        vec![r#"{"kind":"Secret","data":{"a":"czNjcjN0"]"#],
    );
    assert_eq!(mask_response(&get, broken).await.unwrap_err().code, 502);
    // A single object, split anyhow: masked, Content-Length gone.
    let ok = upstream(
        "application/json; charset=utf-8",
        vec![r#"{"kind":"Secret","da"#, r#"ta":{"a":"czNjcjN0"}}"#],
    );
    let ok = mask_response(&get, ok).await.unwrap();
    assert!(ok.headers().get("content-length").is_none());
    let body = ok.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["data"]["a"],
        MASKED_BASE64
    );
    // Truncated after masked bytes went out: the body ends with an error.
    let truncated = upstream(
        "application/json",
        vec![
            r#"{"kind":"SecretList","items":[{"data":{"a":"czNjcjN0"}},"#,
            r#"{"data":{"b":"czNjcjN0"#,
        ],
    );
    let mut body = mask_response(&list, truncated).await.unwrap().into_body();
    let (mut seen, mut failed) = (Vec::new(), false);
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => seen.extend_from_slice(&frame.into_data().unwrap()),
            Err(_) => failed = true,
        }
    }
    assert!(failed, "a truncated list must end with an error");
    let seen = String::from_utf8(seen).unwrap();
    assert!(
        seen.contains(MASKED_BASE64) && !seen.contains(SECRET_VALUE),
        "{seen}"
    );
    // An empty answer (HEAD, 204) has nothing to mask.
    let mut empty = Response::new(body::empty());
    *empty.status_mut() = StatusCode::OK;
    assert!(mask_response(&get, empty).await.is_ok());
}
