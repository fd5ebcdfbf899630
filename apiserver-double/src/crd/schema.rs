//! Validation of one version's `openAPIV3Schema`, in the order and with the messages of
//! apiextensions-apiserver 1.32 (`validateCustomResourceDefinitionValidation` in
//! pkg/apis/apiextensions/validation/validation.go): `nullable` at the root, then the
//! structural-schema rules (pkg/apiserver/schema/validation.go and complete.go, errors
//! sorted by message), then, when the schema is structural, its defaults
//! (defaults.rs), then the OpenAPI rules
//! (`ValidateCustomResourceDefinitionOpenAPISchema`, `specStandardValidatorV3`).
//!
//! Not here: `pattern` compilation, CEL (`x-kubernetes-validations` rules are not
//! compiled), `x-kubernetes-list-type: map` key rules, and the `fields allowed at the
//! root with the status subresource` rule for fields other than `type`. An `enum`
//! member is never checked against the type: the real server does not either.

use serde_json::Value;

use super::field::{FieldError, Path, go_value};

const OPENAPI_TYPES: [&str; 6] = ["array", "boolean", "integer", "number", "object", "string"];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Root,
    Item,
    Field,
}

/// Every error of one version's schema at `path` (`spec.versions[i].schema`).
pub(super) fn validate(schema: &Value, path: &Path, status_enabled: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let root = path.child("openAPIV3Schema");
    let ty = str_of(schema, "type");
    if status_enabled && !ty.is_empty() && ty != "object" {
        errs.push(FieldError::invalid(
            &path.child("openAPIV3Schema.type"),
            &go_value(&schema["type"]),
            r#"only "object" is allowed as the type at the root of the schema if the status subresource is enabled"#,
        ));
    }
    if is_true(schema, "nullable") {
        errs.push(FieldError::forbidden(
            &path.child("openAPIV3Schema.nullable"),
            "nullable cannot be true at the root",
        ));
    }
    let mut structural = Vec::new();
    invariants(schema, Level::Root, &root, &mut structural);
    completeness(schema, schema, &root, &root, &mut structural);
    structural.sort_by_key(FieldError::message);
    if structural.is_empty() {
        super::defaults::validate(schema, &root, &mut errs);
    }
    errs.extend(structural);
    openapi(schema, &root, true, &Ctx::default(), &mut errs);
    errs
}

fn str_of<'a>(s: &'a Value, key: &str) -> &'a str {
    s[key].as_str().unwrap_or_default()
}

pub(super) fn is_true(s: &Value, key: &str) -> bool {
    s[key].as_bool() == Some(true)
}

pub(super) fn properties(s: &Value) -> impl Iterator<Item = (&String, &Value)> {
    s["properties"].as_object().into_iter().flatten()
}

/// The schema of `additionalProperties` (not `true`/`false`).
pub(super) fn additional_schema(s: &Value) -> Option<&Value> {
    s.get("additionalProperties").filter(|v| v.is_object())
}

// === structural invariants (validateStructuralInvariants) ===

fn invariants(s: &Value, lvl: Level, path: &Path, errs: &mut Vec<FieldError>) {
    if !s.is_object() {
        return;
    }
    let ty = str_of(s, "type");
    if ty == "array" && s.get("items").is_none() {
        errs.push(FieldError::required(
            &path.child("items"),
            "must be specified",
        ));
    }
    if let Some(items) = s.get("items").filter(|i| i.is_object()) {
        invariants(items, Level::Item, &path.child("items"), errs);
    }
    for (k, v) in properties(s) {
        invariants(v, Level::Field, &path.child("properties").key(k), errs);
    }
    if s.get("additionalProperties").is_some() {
        if lvl == Level::Root {
            errs.push(FieldError::forbidden(
                &path.child("additionalProperties"),
                "must not be used at the root",
            ));
        }
        if let Some(values) = additional_schema(s) {
            invariants(
                values,
                Level::Field,
                &path.child("additionalProperties"),
                errs,
            );
        }
    }
    let int_or_string = is_true(s, "x-kubernetes-int-or-string");
    let preserve = is_true(s, "x-kubernetes-preserve-unknown-fields");
    let embedded = is_true(s, "x-kubernetes-embedded-resource");
    if int_or_string && preserve {
        errs.push(FieldError::invalid(
            &path.child("x-kubernetes-preserve-unknown-fields"),
            "true",
            "must be false if x-kubernetes-int-or-string is true",
        ));
    }
    if int_or_string && embedded {
        errs.push(FieldError::invalid(
            &path.child("x-kubernetes-embedded-resource"),
            "true",
            "must be false if x-kubernetes-int-or-string is true",
        ));
    }
    let skip_any_of = is_int_or_string_any_of(&s["anyOf"]);
    let skip_first_all_of_any_of = s["allOf"]
        .as_array()
        .and_then(|a| a.first())
        .is_some_and(|first| is_int_or_string_any_of(&first["anyOf"]));
    value_validation(s, skip_any_of, skip_first_all_of_any_of, lvl, path, errs);
    if embedded && ty != "object" {
        let detail = "must be object if x-kubernetes-embedded-resource is true";
        errs.push(if ty.is_empty() {
            FieldError::required(&path.child("type"), detail)
        } else {
            FieldError::invalid(&path.child("type"), &go_value(&s["type"]), detail)
        });
    } else if ty.is_empty() && !int_or_string && !preserve {
        let detail = match lvl {
            Level::Root => "must not be empty at the root",
            Level::Item => "must not be empty for specified array items",
            Level::Field => "must not be empty for specified object fields",
        };
        errs.push(FieldError::required(&path.child("type"), detail));
    }
    if embedded && s.get("additionalProperties").is_some() {
        errs.push(FieldError::forbidden(
            &path.child("additionalProperties"),
            "must not be used if x-kubernetes-embedded-resource is set",
        ));
    }
    if lvl == Level::Root && !ty.is_empty() && ty != "object" {
        errs.push(FieldError::invalid(
            &path.child("type"),
            &go_value(&s["type"]),
            "must be object at the root",
        ));
    }
    let check_metadata = lvl == Level::Root || embedded;
    for name in ["kind", "apiVersion"] {
        if let Some(p) = s["properties"].get(name)
            && check_metadata
            && str_of(p, "type") != "string"
        {
            let at = path.child("properties").key(name).child("type");
            errs.push(FieldError::invalid(&at, &go_type(p), "must be string"));
        }
    }
    if let Some(meta) = s["properties"].get("metadata") {
        let at = path.child("properties").key("metadata");
        if check_metadata && str_of(meta, "type") != "object" {
            errs.push(FieldError::invalid(
                &at.child("type"),
                &go_type(meta),
                "must be object",
            ));
        }
        if lvl == Level::Root && !only_names(meta) {
            errs.push(FieldError::forbidden(
                &at,
                "must not specify anything other than name and generateName, but metadata is implicitly specified",
            ));
        }
    }
    if embedded && !preserve && properties(s).next().is_none() {
        errs.push(FieldError::required(
            &path.child("properties"),
            "must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields",
        ));
    }
}

/// A schema's `type` as `%q` prints it (`""` when unset).
fn go_type(s: &Value) -> String {
    go_value(&Value::String(str_of(s, "type").to_owned()))
}

/// Whether a root `metadata` schema restricts at most `name` and `generateName`:
/// the real server clears those, `type` and `default`, then wants nothing left.
fn only_names(meta: &Value) -> bool {
    let Some(map) = meta.as_object() else {
        return true;
    };
    let props_ok = properties(meta).all(|(k, _)| k == "name" || k == "generateName");
    props_ok
        && map
            .keys()
            .all(|k| matches!(k.as_str(), "type" | "default" | "properties"))
}

/// `validateValueValidation`: the logic junctors of a node. Only the root of a
/// structural node may skip the int-or-string patterns (`anyOf`, or the first
/// `allOf`'s `anyOf`); nested nodes never do.
fn value_validation(
    s: &Value,
    skip_any_of: bool,
    skip_first_all_of_any_of: bool,
    lvl: Level,
    path: &Path,
    errs: &mut Vec<FieldError>,
) {
    if !skip_any_of {
        for (i, v) in s["anyOf"].as_array().into_iter().flatten().enumerate() {
            nested(v, false, lvl, &path.child("anyOf").index(i), errs);
        }
    }
    for (i, v) in s["allOf"].as_array().into_iter().flatten().enumerate() {
        let skip = skip_first_all_of_any_of && i == 0;
        nested(v, skip, lvl, &path.child("allOf").index(i), errs);
    }
    for (i, v) in s["oneOf"].as_array().into_iter().flatten().enumerate() {
        nested(v, false, lvl, &path.child("oneOf").index(i), errs);
    }
    if let Some(not) = s.get("not") {
        nested(not, false, lvl, &path.child("not"), errs);
    }
}

/// `anyOf: [{type: integer}, {type: string}]`, the int-or-string pattern.
fn is_int_or_string_any_of(any_of: &Value) -> bool {
    let only_type = |v: &Value, t: &str| {
        v.as_object()
            .is_some_and(|m| m.len() == 1 && m.get("type").and_then(Value::as_str) == Some(t))
    };
    matches!(any_of.as_array().map(Vec::as_slice), Some([a, b]) if only_type(a, "integer") && only_type(b, "string"))
}

/// `validateNestedValueValidation`: what a node under a junctor may not set.
fn nested(v: &Value, skip_any_of: bool, lvl: Level, path: &Path, errs: &mut Vec<FieldError>) {
    if !v.is_object() {
        return;
    }
    value_validation(v, skip_any_of, false, lvl, path, errs);
    if let Some(items) = v.get("items") {
        nested(items, false, lvl, &path.child("items"), errs);
    }
    for (k, p) in properties(v) {
        nested(
            p,
            false,
            Level::Field,
            &path.child("properties").key(k),
            errs,
        );
    }
    const FORBIDDEN: [(&str, &str); 12] = [
        ("type", "must be empty to be structural"),
        ("additionalProperties", "must be undefined to be structural"),
        ("default", "must be undefined to be structural"),
        ("title", "must be empty to be structural"),
        ("description", "must be empty to be structural"),
        ("nullable", "must be false to be structural"),
        (
            "x-kubernetes-preserve-unknown-fields",
            "must be false to be structural",
        ),
        (
            "x-kubernetes-embedded-resource",
            "must be false to be structural",
        ),
        (
            "x-kubernetes-int-or-string",
            "must be false to be structural",
        ),
        (
            "x-kubernetes-list-map-keys",
            "must be empty to be structural",
        ),
        (
            "x-kubernetes-list-type",
            "must be undefined to be structural",
        ),
        (
            "x-kubernetes-map-type",
            "must be undefined to be structural",
        ),
    ];
    for (key, detail) in FORBIDDEN {
        if set(v, key) {
            errs.push(FieldError::forbidden(&path.child(key), detail));
        }
    }
    if v["x-kubernetes-validations"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
    {
        errs.push(FieldError::forbidden(
            &path.child("x-kubernetes-validations"),
            "must be empty to be structural",
        ));
    }
    if v["properties"].get("metadata").is_some() {
        errs.push(FieldError::forbidden(
            &path.child("properties").key("metadata"),
            "must not be specified in a nested context",
        ));
    }
}

/// Whether a field is set to something other than its Go zero value.
fn set(v: &Value, key: &str) -> bool {
    match v.get(key) {
        None | Some(Value::Null | Value::Bool(false)) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(_) => true,
    }
}

// === completeness (validateStructuralCompleteness) ===

/// Every property and item a junctor names must also be specified outside of it.
fn completeness(v: &Value, s: &Value, s_path: &Path, v_path: &Path, errs: &mut Vec<FieldError>) {
    for junctor in ["allOf", "anyOf", "oneOf"] {
        for (i, n) in v[junctor].as_array().into_iter().flatten().enumerate() {
            nested_completeness(n, Some(s), s_path, &v_path.child(junctor).index(i), errs);
        }
    }
    if let Some(not) = v.get("not") {
        nested_completeness(not, Some(s), s_path, &v_path.child("not"), errs);
    }
}

fn nested_completeness(
    v: &Value,
    s: Option<&Value>,
    s_path: &Path,
    v_path: &Path,
    errs: &mut Vec<FieldError>,
) {
    let Some(s) = s else {
        errs.push(FieldError::required(
            s_path,
            &format!("because it is defined in {}", v_path.as_str()),
        ));
        return;
    };
    completeness(v, s, s_path, v_path, errs);
    if let Some(items) = v.get("items") {
        nested_completeness(
            items,
            s.get("items"),
            &s_path.child("items"),
            &v_path.child("items"),
            errs,
        );
    }
    for (k, p) in properties(v) {
        let at = s_path.child("properties").key(k);
        let from = v_path.child("properties").key(k);
        match s["properties"].get(k) {
            Some(sp) => nested_completeness(p, Some(sp), &at, &from, errs),
            None => errs.push(FieldError::required(
                &at,
                &format!("because it is defined in {}", from.as_str()),
            )),
        }
    }
}

// === OpenAPI rules (ValidateCustomResourceDefinitionOpenAPISchema) ===

/// What the nodes above say about this one (`specStandardValidatorV3`'s state).
#[derive(Clone, Default)]
struct Ctx {
    /// Why a `default` is forbidden here, if it is.
    forbid_default: Option<String>,
    /// Inside the root's (or an embedded resource's) `metadata`, `kind` or `apiVersion`.
    in_meta: bool,
}

fn openapi(s: &Value, path: &Path, root: bool, ctx: &Ctx, errs: &mut Vec<FieldError>) {
    if !s.is_object() {
        return;
    }
    spec_standard(s, path, ctx, errs);
    if is_true(s, "uniqueItems") {
        errs.push(FieldError::forbidden(
            &path.child("uniqueItems"),
            "uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
        ));
    }
    if let Some(additional) = s.get("additionalProperties") {
        let allows_all = additional == &Value::Bool(true);
        if properties(s).next().is_some() && !allows_all {
            errs.push(FieldError::forbidden(
                &path.child("additionalProperties"),
                "additionalProperties and properties are mutual exclusive",
            ));
        }
        if let Some(values) = additional_schema(s) {
            let mut sub = ctx.clone();
            if ctx.in_meta {
                sub.forbid_default =
                    Some("inside additionalProperties applying to object metadata".into());
            }
            openapi(
                values,
                &path.child("additionalProperties"),
                false,
                &sub,
                errs,
            );
        }
    }
    let embedded = is_true(s, "x-kubernetes-embedded-resource");
    for (k, p) in properties(s) {
        let mut sub = ctx.clone();
        if (root || embedded) && matches!(k.as_str(), "metadata" | "kind" | "apiVersion") {
            sub.in_meta = true;
            if root {
                sub.forbid_default = Some(format!("in top-level {k}"));
            }
        }
        openapi(p, &path.child("properties").key(k), false, &sub, errs);
    }
    if let Some(not) = s.get("not") {
        openapi(not, &path.child("not"), false, ctx, errs);
    }
    for junctor in ["allOf", "oneOf", "anyOf"] {
        for (i, v) in s[junctor].as_array().into_iter().flatten().enumerate() {
            openapi(v, &path.child(junctor).index(i), false, ctx, errs);
        }
    }
    match s.get("items") {
        Some(Value::Array(list)) => {
            for (i, v) in list.iter().enumerate() {
                openapi(v, &path.child("items").index(i), false, ctx, errs);
            }
        }
        Some(item) => openapi(item, &path.child("items"), false, ctx, errs),
        None => {}
    }
    extensions(s, path, errs);
}

/// `specStandardValidatorV3.validate`: what OpenAPI v3 allows a CRD schema node.
fn spec_standard(s: &Value, path: &Path, ctx: &Ctx, errs: &mut Vec<FieldError>) {
    let ty = str_of(s, "type");
    if !ty.is_empty() && !OPENAPI_TYPES.contains(&ty) {
        errs.push(FieldError::not_supported(
            &path.child("type"),
            &go_value(&s["type"]),
            &OPENAPI_TYPES,
        ));
    }
    if let Some(reason) = &ctx.forbid_default
        && s.get("default").is_some_and(|d| !d.is_null())
    {
        errs.push(FieldError::forbidden(
            &path.child("default"),
            &format!("must not be set {reason}"),
        ));
    }
    for (key, detail) in [
        ("id", "id is not supported"),
        ("additionalItems", "additionalItems is not supported"),
        ("patternProperties", "patternProperties is not supported"),
        ("definitions", "definitions is not supported"),
        ("dependencies", "dependencies is not supported"),
        ("$ref", "$ref is not supported"),
    ] {
        let present = match s.get(key) {
            None | Some(Value::Null) => false,
            Some(Value::Object(m)) => key == "additionalItems" || !m.is_empty(),
            Some(Value::String(v)) => !v.is_empty(),
            Some(_) => true,
        };
        if present {
            errs.push(FieldError::forbidden(&path.child(key), detail));
        }
    }
    if ty == "null" {
        errs.push(FieldError::forbidden(
            &path.child("type"),
            "type cannot be set to null, use nullable as an alternative",
        ));
    }
    if s["items"].is_array() {
        errs.push(FieldError::forbidden(
            &path.child("items"),
            "items must be a schema object and not an array",
        ));
    }
    if ctx.in_meta && is_true(s, "x-kubernetes-embedded-resource") {
        errs.push(FieldError::forbidden(
            &path.child("x-kubernetes-embedded-resource"),
            "must not be used inside of resource meta",
        ));
    }
}

/// The `x-kubernetes-*` rules of one node.
fn extensions(s: &Value, path: &Path, errs: &mut Vec<FieldError>) {
    let ty = str_of(s, "type");
    if s.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(false)) {
        errs.push(FieldError::invalid(
            &path.child("x-kubernetes-preserve-unknown-fields"),
            "false",
            "must be true or undefined",
        ));
    }
    if let Some(map_type) = s["x-kubernetes-map-type"].as_str() {
        if ty != "object" {
            let detail = "must be object if x-kubernetes-map-type is specified";
            errs.push(typed(path, s, detail));
        }
        if !matches!(map_type, "atomic" | "granular") {
            errs.push(FieldError::not_supported(
                &path.child("x-kubernetes-map-type"),
                &go_value(&s["x-kubernetes-map-type"]),
                &["atomic", "granular"],
            ));
        }
    }
    if let Some(list_type) = s["x-kubernetes-list-type"].as_str() {
        if ty != "array" {
            let detail = "must be array if x-kubernetes-list-type is specified";
            errs.push(typed(path, s, detail));
        }
        if !matches!(list_type, "atomic" | "set" | "map") {
            errs.push(FieldError::not_supported(
                &path.child("x-kubernetes-list-type"),
                &go_value(&s["x-kubernetes-list-type"]),
                &["atomic", "set", "map"],
            ));
        }
    }
    let has_keys = s["x-kubernetes-list-map-keys"]
        .as_array()
        .is_some_and(|k| !k.is_empty());
    match s["x-kubernetes-list-type"].as_str() {
        None if has_keys => errs.push(FieldError::required(
            &path.child("x-kubernetes-list-type"),
            "must be map if x-kubernetes-list-map-keys is non-empty",
        )),
        Some(t) if has_keys && t != "map" => errs.push(FieldError::invalid(
            &path.child("x-kubernetes-list-type"),
            &go_value(&s["x-kubernetes-list-type"]),
            "must be map if x-kubernetes-list-map-keys is non-empty",
        )),
        Some("map") if !has_keys => errs.push(FieldError::required(
            &path.child("x-kubernetes-list-map-keys"),
            "must not be empty if x-kubernetes-list-type is map",
        )),
        _ => {}
    }
}

/// `Required` when `type` is unset, `Invalid` naming it otherwise.
fn typed(path: &Path, s: &Value, detail: &str) -> FieldError {
    if str_of(s, "type").is_empty() {
        FieldError::required(&path.child("type"), detail)
    } else {
        FieldError::invalid(&path.child("type"), &go_value(&s["type"]), detail)
    }
}
