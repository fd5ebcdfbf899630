use super::*;

fn writer(manager: &str) -> Writer {
    Writer {
        manager: manager.into(),
        api_version: "v1".into(),
        subresource: None,
        time: "2026-12-06T08:00:00Z".into(),
    }
}

fn cm(data: &Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "demo"}, "data": data})
}

#[test]
fn fields_v1_round_trips_with_dots_for_members_that_have_children() {
    let set = Set::of(
        &json!({"apiVersion": "v1", "metadata": {"name": "x", "labels": {"a": "1"}},
        "spec": {"containers": [{"name": "app", "image": "i"}], "finalizers": ["f"]}}),
    )
    .stripped();
    let v1 = set.to_fields_v1();
    assert_eq!(
        v1,
        json!({"f:metadata": {"f:labels": {"f:a": {}}},
            "f:spec": {"f:containers": {
                "k:{\"name\":\"app\"}": {".": {}, "f:image": {}, "f:name": {}}},
                "f:finalizers": {"v:\"f\"": {}}}})
    );
    assert_eq!(Set::from_fields_v1(&v1), set);
    assert!(
        set.paths()
            .contains(&".spec.containers[name=\"app\"].image".to_owned())
    );
}

#[test]
fn apply_prunes_what_it_no_longer_applies_and_conflicts_with_other_managers() {
    let mut created = cm(&json!({"a": "1", "b": "2"}));
    track_update(None, &mut created, &writer("kubectl-create"));
    // The creator holds both keys; applying a different value for one conflicts.
    let Err(conflicts) = apply(
        Some(&created),
        &cm(&json!({"a": "9"})),
        &writer("ci"),
        false,
    ) else {
        panic!("no conflict");
    };
    assert_eq!(
        conflicts.message_and_causes().0,
        "Apply failed with 1 conflict: conflict with \"kubectl-create\" using v1: .data.a"
    );
    // The same value is shared, not a conflict; then forced, a takes a.
    let shared = apply(
        Some(&created),
        &cm(&json!({"a": "1", "c": "3"})),
        &writer("ci"),
        false,
    )
    .unwrap();
    assert_eq!(shared["data"], json!({"a": "1", "b": "2", "c": "3"}));
    let forced = apply(
        Some(&shared),
        &cm(&json!({"a": "9", "c": "3"})),
        &writer("ci"),
        true,
    )
    .unwrap();
    let managers: Vec<&str> = forced["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["manager"].as_str().unwrap())
        .collect();
    assert_eq!(managers, ["ci", "kubectl-create"]);
    assert_eq!(
        forced["metadata"]["managedFields"][1]["fieldsV1"],
        json!({"f:data": {".": {}, "f:b": {}}})
    );
    // Applying without c removes c (only ci held it), never b (the creator's).
    let pruned = apply(Some(&forced), &cm(&json!({"a": "9"})), &writer("ci"), false).unwrap();
    assert_eq!(pruned["data"], json!({"a": "9", "b": "2"}));
    // The same configuration again changes nothing, time included.
    let again = apply(Some(&pruned), &cm(&json!({"a": "9"})), &writer("ci"), false).unwrap();
    assert_eq!(again, pruned);
}

#[test]
fn updates_take_the_fields_they_change() {
    let mut created = cm(&json!({"a": "1"}));
    track_update(None, &mut created, &writer("kubectl-create"));
    let mut edited = created.clone();
    edited["data"]["a"] = json!("2");
    edited["data"]["b"] = json!("3");
    track_update(Some(&created), &mut edited, &writer("kubectl-edit"));
    let fields = &edited["metadata"]["managedFields"];
    assert_eq!(fields[0]["manager"], "kubectl-create");
    assert_eq!(fields[0]["fieldsV1"], json!({"f:data": {}}));
    assert_eq!(
        fields[1]["fieldsV1"],
        json!({"f:data": {"f:a": {}, "f:b": {}}})
    );
    // Nothing changed: the entries stay as they were.
    let mut same = edited.clone();
    let time_before = same["metadata"]["managedFields"].clone();
    track_update(
        Some(&edited),
        &mut same,
        &Writer {
            time: "2030-01-01T00:00:00Z".into(),
            ..writer("kubectl-edit")
        },
    );
    assert_eq!(same["metadata"]["managedFields"], time_before);
    // A change to a field it already holds renews the entry's time.
    let mut again = edited.clone();
    again["data"]["a"] = json!("4");
    let later = Writer {
        time: "2031-01-01T00:00:00Z".into(),
        ..writer("kubectl-edit")
    };
    track_update(Some(&edited), &mut again, &later);
    assert_eq!(
        again["metadata"]["managedFields"][1]["time"],
        "2031-01-01T00:00:00Z"
    );
}
