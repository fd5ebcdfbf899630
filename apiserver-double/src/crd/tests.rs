use serde_json::{Value, json};

use super::*;

fn crd_with(schema: &Value) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.io"},
        "spec": {
            "group": "example.io", "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                          "schema": {"openAPIV3Schema": schema},
                          "subresources": {"status": {}}}]
        }
    })
}

fn messages(crd: &Value, version: ServerVersion) -> Vec<String> {
    let mut crd = crd.clone();
    set_defaults(&mut crd);
    validate(&crd, version)
        .iter()
        .map(FieldError::message)
        .collect()
}

const V: &str = "spec.versions[0].schema.openAPIV3Schema";

#[test]
fn schema_rules_give_the_real_servers_messages() {
    let obj = |props: Value| json!({"type": "object", "properties": {"spec": {"type": "object", "properties": props}}});
    let at = format!("{V}.properties[spec].properties");
    let cases: Vec<(&str, Value, Vec<String>)> = vec![
        ("fine", obj(json!({"a": {"type": "string"}})), vec![]),
        (
            "null enum member of a nullable string: accepted since 1.22.3",
            obj(json!({"a": {"type": "string", "nullable": true, "enum": ["x", null]}})),
            vec![],
        ),
        (
            "enum members of another type: not checked, as on the real server",
            obj(json!({"a": {"type": "string", "enum": [1, true]}})),
            vec![],
        ),
        (
            "missing type of a field",
            obj(json!({"a": {"description": "no type"}})),
            vec![format!(
                "{at}[a].type: Required value: must not be empty for specified object fields"
            )],
        ),
        (
            "missing type of an array item",
            obj(json!({"a": {"type": "array", "items": {"description": "x"}}})),
            vec![format!(
                "{at}[a].items.type: Required value: must not be empty for specified array items"
            )],
        ),
        (
            "array without items",
            obj(json!({"a": {"type": "array"}})),
            vec![format!("{at}[a].items: Required value: must be specified")],
        ),
        (
            "type outside OpenAPI v3",
            obj(json!({"a": {"type": "strin"}})),
            vec![format!(
                r#"{at}[a].type: Unsupported value: "strin": supported values: "array", "boolean", "integer", "number", "object", "string""#
            )],
        ),
        (
            "type null",
            obj(json!({"a": {"type": "null"}})),
            vec![
                format!(
                    r#"{at}[a].type: Unsupported value: "null": supported values: "array", "boolean", "integer", "number", "object", "string""#
                ),
                format!(
                    "{at}[a].type: Forbidden: type cannot be set to null, use nullable as an alternative"
                ),
            ],
        ),
        (
            "anyOf branch with a type, a description and nullable",
            obj(
                json!({"a": {"type": "string", "anyOf": [{"type": "string", "description": "d", "nullable": true}, {"enum": ["x"]}]}}),
            ),
            vec![
                format!("{at}[a].anyOf[0].description: Forbidden: must be empty to be structural"),
                format!("{at}[a].anyOf[0].nullable: Forbidden: must be false to be structural"),
                format!("{at}[a].anyOf[0].type: Forbidden: must be empty to be structural"),
            ],
        ),
        (
            "int-or-string pattern",
            obj(
                json!({"a": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]}}),
            ),
            vec![],
        ),
        (
            "property only in a junctor of the root",
            json!({"type": "object", "allOf": [{"properties": {"b": {"minLength": 1}}}]}),
            vec![format!(
                "{V}.properties[b]: Required value: because it is defined in {V}.allOf[0].properties[b]"
            )],
        ),
        (
            "property only in a junctor below the root: completeness starts at the root only",
            obj(
                json!({"a": {"type": "object", "allOf": [{"properties": {"b": {"minLength": 1}}}]}}),
            ),
            vec![],
        ),
        (
            "additionalProperties beside properties",
            obj(
                json!({"a": {"type": "object", "properties": {"b": {"type": "string"}}, "additionalProperties": {"type": "string"}}}),
            ),
            vec![format!(
                "{at}[a].additionalProperties: Forbidden: additionalProperties and properties are mutual exclusive"
            )],
        ),
        (
            "unknown field in a default",
            obj(
                json!({"a": {"type": "object", "properties": {"b": {"type": "string"}}, "default": {"c": "x"}}}),
            ),
            vec![format!(
                r#"{at}[a].default: Invalid value: map[string]interface {{}}{{"c":"x"}}: must not have unknown fields"#
            )],
        ),
        (
            "default outside the enum",
            obj(
                json!({"a": {"type": "string", "enum": ["enforce", "shadow"], "default": "audit"}}),
            ),
            vec![format!(
                r#"{at}[a].default: Unsupported value: "audit": supported values: "enforce", "shadow""#
            )],
        ),
        (
            "list type on an object",
            obj(json!({"a": {"type": "object", "x-kubernetes-list-type": "set"}})),
            vec![format!(
                r#"{at}[a].type: Invalid value: "object": must be array if x-kubernetes-list-type is specified"#
            )],
        ),
        (
            "uniqueItems",
            obj(json!({"a": {"type": "array", "items": {"type": "string"}, "uniqueItems": true}})),
            vec![format!(
                "{at}[a].uniqueItems: Forbidden: uniqueItems cannot be set to true since the runtime complexity becomes quadratic"
            )],
        ),
        (
            "$ref",
            obj(json!({"a": {"type": "string", "$ref": "#/definitions/x"}})),
            vec![format!("{at}[a].$ref: Forbidden: $ref is not supported")],
        ),
        (
            "nullable root",
            json!({"type": "object", "nullable": true}),
            vec![format!(
                "{V}.nullable: Forbidden: nullable cannot be true at the root"
            )],
        ),
        (
            "array root with the status subresource",
            json!({"type": "array", "items": {"type": "string"}}),
            vec![
                format!(
                    r#"{V}.type: Invalid value: "array": only "object" is allowed as the type at the root of the schema if the status subresource is enabled"#
                ),
                format!(r#"{V}.type: Invalid value: "array": must be object at the root"#),
            ],
        ),
        (
            "metadata beyond name",
            json!({"type": "object", "properties": {"metadata": {"type": "object", "properties": {"labels": {"type": "object"}}}}}),
            vec![format!(
                "{V}.properties[metadata]: Forbidden: must not specify anything other than name and generateName, but metadata is implicitly specified"
            )],
        ),
        (
            "default in top-level metadata",
            json!({"type": "object", "properties": {"metadata": {"type": "object", "default": {}}}}),
            vec![format!(
                "{V}.properties[metadata].default: Forbidden: must not be set in top-level metadata"
            )],
        ),
    ];
    for (name, schema, want) in cases {
        let got = messages(&crd_with(&schema), ServerVersion::default());
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn crd_level_rules() {
    let schema = json!({"type": "object"});
    let mut wrong_name = crd_with(&schema);
    wrong_name["metadata"]["name"] = json!("widgets");
    let mut no_dot = crd_with(&schema);
    no_dot["spec"]["group"] = json!("example");
    no_dot["metadata"]["name"] = json!("widgets.example");
    let mut bad_scope = crd_with(&schema);
    bad_scope["spec"]["scope"] = json!("Global");
    let mut no_schema = crd_with(&schema);
    no_schema["spec"]["versions"][0]["schema"] = json!(null);
    let mut column = crd_with(&schema);
    column["spec"]["versions"][0]["additionalPrinterColumns"] =
        json!([{"name": "Mode", "type": "text", "jsonPath": ".spec.mode"}]);
    let cases = [
        (
            wrong_name,
            r#"metadata.name: Invalid value: "widgets": must be spec.names.plural+"."+spec.group"#,
        ),
        (
            no_dot,
            r#"spec.group: Invalid value: "example": should be a domain with at least one dot"#,
        ),
        (
            bad_scope,
            r#"spec.scope: Unsupported value: "Global": supported values: "Cluster", "Namespaced""#,
        ),
        (
            no_schema,
            "spec.versions[0].schema.openAPIV3Schema: Required value",
        ),
        (
            column,
            r#"spec.versions[0].additionalPrinterColumns[0].type: Invalid value: "text": must be one of boolean,date,integer,number,string"#,
        ),
    ];
    for (crd, want) in cases {
        assert_eq!(messages(&crd, ServerVersion::default()), [want]);
    }
}

#[test]
fn a_null_enum_member_fails_only_before_the_conversion_fix() {
    let crd = crd_with(
        &json!({"type": "object", "properties": {"a": {"type": "string", "nullable": true, "enum": ["x", null]}}}),
    );
    for (minor, patch, refused) in [
        (19, 16, true),
        (20, 11, true),
        (20, 12, false),
        (21, 5, true),
        (21, 6, false),
        (22, 2, true),
        (22, 3, false),
        (23, 0, false),
        (32, 4, false),
    ] {
        let got = messages(&crd, ServerVersion::new(minor, patch));
        assert_eq!(
            got.len(),
            usize::from(refused),
            "1.{minor}.{patch}: {got:?}"
        );
        if refused {
            assert!(got[0].starts_with(r#"spec.versions: Invalid value: []apiextensions.CustomResourceDefinitionVersion{apiextensions.CustomResourceDefinitionVersion{Name:"v1", Served:true, Storage:true, "#), "{got:?}");
            assert!(got[0].ends_with("}}: per-version schemas may not all be set to identical values (top-level validation should be used instead)"), "{got:?}");
        }
    }
}

#[test]
fn admission_defaults_establishes_and_warns_from_1_34() {
    let crd = crd_with(
        &json!({"type": "object", "properties": {"n": {"type": "integer", "format": "uint64"}, "s": {"type": "string", "format": "date-time"}}}),
    );
    let (stored, warnings) = admit_create(crd.clone(), ServerVersion::default()).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(stored["spec"]["names"]["singular"], "widget");
    assert_eq!(stored["spec"]["names"]["listKind"], "WidgetList");
    assert_eq!(stored["spec"]["conversion"]["strategy"], "None");
    assert_eq!(stored["metadata"]["generation"], 1);
    assert_eq!(stored["status"]["storedVersions"], json!(["v1"]));
    assert_eq!(stored["status"]["conditions"][1]["type"], "Established");
    let (_, warnings) = admit_create(crd, ServerVersion::new(34, 0)).unwrap();
    assert_eq!(warnings, [r#"unrecognized format "uint64""#]);

    let mut changed = stored.clone();
    changed["spec"]["scope"] = json!("Cluster");
    changed["status"] = json!({});
    let (updated, _) = admit_update(changed, &stored, ServerVersion::default()).unwrap();
    assert_eq!(updated["metadata"]["generation"], 2);
    assert_eq!(updated["status"]["storedVersions"], json!(["v1"]));
}

#[test]
fn the_invalid_status_is_apierrors_new_invalid() {
    let errs = [
        FieldError::required(&Path::new("spec").child("group"), ""),
        FieldError::required(&Path::new("spec").child("group"), ""),
        FieldError::forbidden(&Path::new("spec").child("x"), "no"),
    ];
    let status = invalid_status(GROUP, KIND, "a.b", &errs);
    assert_eq!(
        status["message"],
        r#"CustomResourceDefinition.apiextensions.k8s.io "a.b" is invalid: [spec.group: Required value, spec.x: Forbidden: no]"#
    );
    assert_eq!(status["code"], 422);
    assert_eq!(
        status["details"]["causes"][2],
        json!({"reason": "FieldValueForbidden", "message": "Forbidden: no", "field": "spec.x"})
    );
    let one = invalid_status(GROUP, KIND, "a.b", &errs[..1]);
    assert_eq!(
        one["message"],
        r#"CustomResourceDefinition.apiextensions.k8s.io "a.b" is invalid: spec.group: Required value"#
    );
}
