//! The response masker on hostile response bodies (objects, lists, Tables, watch
//! streams), fed in random splits as a network would deliver them.
//!
//! Oracles, each independent of the masker's own code:
//! - the output is the same however the input is split, and so is the verdict;
//! - accepted output is valid JSON (one value, or one event per line for a watch),
//!   and accepted input was valid JSON too: the masker re-serializes, it never
//!   passes through bytes it could not parse;
//! - no Secret value survives: wherever the API server puts Secret objects (the
//!   object, every list item, every Table row's object, every watch event's object),
//!   each `data` value is the masked base64 and each `stringData` value the masked
//!   text, and the last-applied annotation is masked the same way inside (or replaced
//!   whole); for ConfigMaps, every key that
//!   the configured rule matches is masked.

#![no_main]

use std::sync::LazyLock;

use http::{Method, Uri};
use kgate::{
    mask::{LAST_APPLIED, MASKED_BASE64, MASKED_TEXT, MaskConfig, Masker, Plan},
    request_info::RequestInfo,
};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

/// The largest unit the scanner holds here: small enough that fuzz inputs reach it.
const MAX_UNIT: usize = 1 << 16;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Secret,
    ConfigMap,
    Pod,
}

static PLANS: LazyLock<Vec<(Kind, Plan)>> = LazyLock::new(|| {
    let config: MaskConfig = serde_json::from_value(json!({
        "configMapKeys": ["(?i)pass"],
        "envNames": ["(?i)token"],
        "annotations": ["example.com/secret"],
        "maxObjectBytes": MAX_UNIT,
    }))
    .expect("mask config");
    let masker = Masker::new(&config).expect("mask config compiles");
    [
        (Kind::Secret, "/api/v1/namespaces/demo/secrets/s"),
        (Kind::Secret, "/api/v1/namespaces/demo/secrets"),
        (Kind::Secret, "/api/v1/secrets?watch=1"),
        (Kind::ConfigMap, "/api/v1/namespaces/demo/configmaps"),
        (
            Kind::ConfigMap,
            "/api/v1/namespaces/demo/configmaps?watch=true",
        ),
        (Kind::Pod, "/api/v1/namespaces/demo/pods"),
    ]
    .into_iter()
    .map(|(kind, uri)| {
        let info = RequestInfo::parse(&Method::GET, &uri.parse::<Uri>().expect("uri"))
            .expect("request info");
        (kind, masker.plan(&info, "bot").expect("a masked resource"))
    })
    .collect()
});

fuzz_target!(|data: &[u8]| {
    let Some((&[select, seed], body)) = data.split_first_chunk::<2>() else {
        return;
    };
    let (kind, plan) = &PLANS[usize::from(select) % PLANS.len()];
    let (whole, whole_ok) = run(plan, body, &[]);
    let splits = splits(seed, body.len());
    let (split, split_ok) = run(plan, body, &splits);
    assert_eq!(
        whole_ok, split_ok,
        "the verdict depends on the split {splits:?}"
    );
    if !whole_ok {
        return;
    }
    assert_eq!(whole, split, "the output depends on the split {splits:?}");
    let values = if plan.is_watch() {
        let events: Result<Vec<Value>, _> = serde_json::Deserializer::from_slice(&whole)
            .into_iter()
            .collect();
        let events = events.expect("accepted watch output is a sequence of JSON values");
        assert!(
            is_json(body, true),
            "accepted a watch stream that is not JSON"
        );
        events
            .into_iter()
            .filter_map(|mut e| e.get_mut("object").map(Value::take))
            .map(|object| (object, false))
            .collect()
    } else {
        let value: Value =
            serde_json::from_slice(&whole).expect("accepted output is one JSON value");
        assert!(is_json(body, false), "accepted a body that is not JSON");
        vec![(value, true)]
    };
    for (value, top) in &values {
        check(*kind, value, *top);
    }
});

/// Whether `body` is JSON (a sequence of values for a watch), at any depth: the
/// masker parses list items one by one, so serde_json's depth limit on the whole
/// body is not the masker's.
fn is_json(body: &[u8], stream: bool) -> bool {
    let mut de = serde_json::Deserializer::from_slice(body);
    de.disable_recursion_limit();
    if stream {
        return de.into_iter::<serde::de::IgnoredAny>().all(|v| v.is_ok());
    }
    serde::Deserialize::deserialize(&mut de)
        .map(|_: serde::de::IgnoredAny| ())
        .and_then(|()| de.end())
        .is_ok()
}

/// Masks `body` fed in pieces ending at `splits`: the output and whether it was accepted.
fn run(plan: &Plan, body: &[u8], splits: &[usize]) -> (Vec<u8>, bool) {
    let mut scanner = plan.scanner(plan.is_watch());
    let mut out = Vec::new();
    let mut from = 0;
    for &to in splits.iter().chain([&body.len()]) {
        if scanner.feed(&body[from..to], &mut out).is_err() {
            return (out, false);
        }
        assert!(scanner.buffered() <= MAX_UNIT, "held more than one unit");
        from = to;
    }
    let ok = scanner.finish().is_ok();
    (out, ok)
}

/// Increasing split points from a seed (xorshift), chunks of 1 to 64 bytes.
fn splits(seed: u8, len: usize) -> Vec<usize> {
    let mut state = u32::from(seed) | 0x9e37_0000;
    let mut at = 0;
    let mut out = Vec::new();
    loop {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        at += (state % 64) as usize + 1;
        if at >= len {
            return out;
        }
        out.push(at);
    }
}

/// Checks one object where the API server puts objects of the planned kind, and the
/// objects it carries (list items, Table rows). `top`: the response itself, whose
/// list or Table envelope is not an object of the kind.
fn check(kind: Kind, value: &Value, top: bool) {
    let Some(obj) = value.as_object() else {
        return;
    };
    let envelope = top
        && obj.get("kind").and_then(Value::as_str).is_some_and(|k| {
            (k.ends_with("List") && obj.get("items").is_some_and(Value::is_array))
                || (k == "Table" && obj.get("rows").is_some_and(Value::is_array))
        });
    if !envelope {
        check_object(kind, value);
    }
    if let Some(Value::Array(items)) = obj.get("items") {
        for item in items {
            check(kind, item, false);
        }
    }
    if let Some(Value::Array(rows)) = obj.get("rows") {
        for row in rows {
            if let Some(object) = row.get("object") {
                check(kind, object, false);
            }
        }
    }
}

fn check_object(kind: Kind, object: &Value) {
    let values = |field: &str| {
        object
            .get(field)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
    };
    match kind {
        Kind::Secret => {
            for (key, value) in values("data") {
                assert_eq!(value, MASKED_BASE64, "Secret data {key:?} leaked");
            }
            for (key, value) in values("stringData") {
                assert_eq!(value, MASKED_TEXT, "Secret stringData {key:?} leaked");
            }
        }
        Kind::ConfigMap => {
            for (key, value) in values("data") {
                if key.to_lowercase().contains("pass") {
                    assert_eq!(value, MASKED_TEXT, "ConfigMap data {key:?} leaked");
                }
            }
            for (key, value) in values("binaryData") {
                if key.to_lowercase().contains("pass") {
                    assert_eq!(value, MASKED_BASE64, "ConfigMap binaryData {key:?} leaked");
                }
            }
        }
        Kind::Pod => {
            let containers = object
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten();
            let env = containers
                .filter_map(|c| c.get("env").and_then(Value::as_array))
                .flatten();
            for var in env {
                let name = var.get("name").and_then(Value::as_str).unwrap_or_default();
                if let (true, Some(value)) =
                    (name.to_lowercase().contains("token"), var.get("value"))
                {
                    assert_eq!(value, MASKED_TEXT, "env {name:?} leaked");
                }
            }
        }
    }
    if let Some(annotations) = object
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    {
        // Masked inside (keys kept for kubectl apply), or replaced whole.
        if let Some(applied) = annotations.get(LAST_APPLIED) {
            let applied = applied.as_str().expect("the last-applied annotation is text");
            if applied != MASKED_TEXT {
                let inner: Value =
                    serde_json::from_str(applied).expect("a masked last-applied is JSON");
                check_object(kind, &inner);
            }
        }
        if let Some(value) = annotations.get("example.com/secret") {
            assert_eq!(value, MASKED_TEXT, "a masked annotation leaked");
        }
    }
}
