//! `apiextensions.k8s.io/v1` CustomResourceDefinitions as kube-apiserver admits them:
//! the v1 defaults (`SetDefaults_CustomResourceDefinition`), the create strategy
//! (status cleared, `storedVersions`, generation 1), the validation of
//! `ValidateCustomResourceDefinition` (pkg/apis/apiextensions/validation, 1.32) with
//! its 422 `Invalid` Status, and the create warnings of 1.34+ (`unrecognized format`).
//! The conditions the real server's controllers add a moment later (`NamesAccepted`,
//! `Established`) are set at once.
//!
//! The server version matters twice. Before 1.20.12, 1.21.6 and 1.22.3 a `null` in an
//! `enum` made the v1-to-internal conversion fail, and the failure was swallowed
//! (`Convert_v1_CustomResourceDefinitionSpec_To_apiextensions_CustomResourceDefinitionSpec`
//! returned nil, fixed by kubernetes#104969): the per-version schema then stayed where
//! the conversion should have moved it, and validation refused the CRD with
//! "per-version schemas may not all be set to identical values". Later servers take
//! such an enum. From 1.34 a create warns about each format the server does not know.
//!
//! Not here: the double does not start serving the resources a CRD defines (kgate's
//! own are always served), conversion webhooks, the name-format rules (DNS-1035 and
//! DNS-1123 checks), `selectableFields`, and the checks that print Go structs whole
//! (one storage version, unique version names).

mod defaults;
mod field;
mod schema;

use serde_json::{Value, json};

pub use self::field::invalid_status;
use self::field::{FieldError, Path, go_value};
use super::resources::ServerVersion;

pub const GROUP: &str = "apiextensions.k8s.io";
pub const KIND: &str = "CustomResourceDefinition";

const PRINTER_COLUMN_TYPES: &str = "boolean,date,integer,number,string";

/// What a create or update of a CRD got: the object to store and the warnings to
/// send, or the errors of a 422.
pub type Admission = Result<(Value, Vec<String>), Vec<FieldError>>;

/// Defaults, validates and prepares `crd` for storage, as a create.
pub fn admit_create(mut crd: Value, version: ServerVersion) -> Admission {
    set_defaults(&mut crd);
    let errs = validate(&crd, version);
    if !errs.is_empty() {
        return Err(errs);
    }
    let warnings = warnings(&crd, version);
    crd["status"] = json!({});
    crd["metadata"]["generation"] = json!(1);
    establish(&mut crd);
    Ok((crd, warnings))
}

/// Defaults and validates `crd` as an update of `old`: the status stays the stored
/// one (the status subresource alone changes it) and a changed spec bumps the
/// generation.
pub fn admit_update(mut crd: Value, old: &Value, version: ServerVersion) -> Admission {
    set_defaults(&mut crd);
    let errs = validate(&crd, version);
    if !errs.is_empty() {
        return Err(errs);
    }
    crd["status"] = old["status"].clone();
    let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
    let bumped = if crd["spec"] == old["spec"] {
        generation
    } else {
        generation + 1
    };
    crd["metadata"]["generation"] = json!(bumped);
    establish(&mut crd);
    Ok((crd, Vec::new()))
}

/// `SetDefaults_CustomResourceDefinitionSpec`.
fn set_defaults(crd: &mut Value) {
    let names = &mut crd["spec"]["names"];
    let kind = names["kind"].as_str().unwrap_or_default().to_owned();
    if names["singular"].as_str().is_none_or(str::is_empty) {
        names["singular"] = json!(kind.to_lowercase());
    }
    if names["listKind"].as_str().is_none_or(str::is_empty) && !kind.is_empty() {
        names["listKind"] = json!(format!("{kind}List"));
    }
    if crd["spec"]["conversion"].is_null() {
        crd["spec"]["conversion"] = json!({"strategy": "None"});
    }
}

/// What the storage-version and names controllers write: `storedVersions`, the
/// accepted names and the `NamesAccepted` and `Established` conditions.
fn establish(crd: &mut Value) {
    let storage: Vec<Value> = versions(crd)
        .iter()
        .filter(|v| v["storage"].as_bool() == Some(true))
        .map(|v| v["name"].clone())
        .collect();
    let now = super::store::now();
    let condition = |ty: &str, reason: &str, message: &str| json!({"type": ty, "status": "True", "lastTransitionTime": now, "reason": reason, "message": message});
    let mut status = crd["status"].take();
    if status["storedVersions"]
        .as_array()
        .is_none_or(Vec::is_empty)
    {
        status["storedVersions"] = json!(storage);
    }
    status["acceptedNames"] = crd["spec"]["names"].clone();
    status["conditions"] = json!([
        condition("NamesAccepted", "NoConflicts", "no conflicts found"),
        condition(
            "Established",
            "InitialNamesAccepted",
            "the initial names have been accepted"
        ),
    ]);
    crd["status"] = status;
}

fn versions(crd: &Value) -> &[Value] {
    crd["spec"]["versions"]
        .as_array()
        .map_or(&[], Vec::as_slice)
}

/// `ValidateCustomResourceDefinition`, in its order.
pub fn validate(crd: &Value, version: ServerVersion) -> Vec<FieldError> {
    let spec = &crd["spec"];
    let mut errs = Vec::new();
    let name = crd["metadata"]["name"].as_str().unwrap_or_default();
    let required_name = format!(
        "{}.{}",
        spec["names"]["plural"].as_str().unwrap_or_default(),
        spec["group"].as_str().unwrap_or_default()
    );
    let meta_name = Path::new("metadata").child("name");
    if name.is_empty() {
        errs.push(FieldError::required(
            &meta_name,
            "name or generateName is required",
        ));
    } else if name != required_name {
        errs.push(FieldError::invalid(
            &meta_name,
            &go_value(&crd["metadata"]["name"]),
            r#"must be spec.names.plural+"."+spec.group"#,
        ));
    }
    let spec_path = Path::new("spec");
    let group = spec["group"].as_str().unwrap_or_default();
    if group.is_empty() {
        errs.push(FieldError::required(&spec_path.child("group"), ""));
    } else if !group.contains('.') {
        errs.push(FieldError::invalid(
            &spec_path.child("group"),
            &go_value(&spec["group"]),
            "should be a domain with at least one dot",
        ));
    }
    let scope = spec["scope"].as_str().unwrap_or_default();
    if scope.is_empty() {
        errs.push(FieldError::required(&spec_path.child("scope"), ""));
    } else if !matches!(scope, "Cluster" | "Namespaced") {
        errs.push(FieldError::not_supported(
            &spec_path.child("scope"),
            &go_value(&spec["scope"]),
            &["Cluster", "Namespaced"],
        ));
    }
    if let Some(swallowed) = null_enum_before_fix(crd, version) {
        errs.push(swallowed);
        return errs;
    }
    for (i, v) in versions(crd).iter().enumerate() {
        version_errors(v, &spec_path.child("versions").index(i), &mut errs);
    }
    for (key, at) in [
        ("plural", "names.plural"),
        ("singular", "names.singular"),
        ("kind", "names.kind"),
        ("listKind", "names.listKind"),
    ] {
        if spec["names"][key].as_str().is_none_or(str::is_empty) {
            errs.push(FieldError::required(&spec_path.child(at), ""));
        }
    }
    errs
}

/// `validateCustomResourceDefinitionVersion` for one entry of `spec.versions`.
fn version_errors(v: &Value, path: &Path, errs: &mut Vec<FieldError>) {
    let status_enabled = v["subresources"]["status"].is_object();
    match v["schema"].get("openAPIV3Schema") {
        Some(s) if s.is_object() => {
            errs.extend(schema::validate(s, &path.child("schema"), status_enabled));
        }
        _ => errs.push(FieldError::required(
            &path.child("schema").child("openAPIV3Schema"),
            "",
        )),
    }
    for (i, col) in v["additionalPrinterColumns"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let at = path.child("additionalPrinterColumns").index(i);
        if col["name"].as_str().is_none_or(str::is_empty) {
            errs.push(FieldError::required(&at.child("name"), ""));
        }
        let detail = format!("must be one of {PRINTER_COLUMN_TYPES}");
        match col["type"].as_str().unwrap_or_default() {
            "" => errs.push(FieldError::required(&at.child("type"), &detail)),
            t if !PRINTER_COLUMN_TYPES.split(',').any(|ok| ok == t) => {
                errs.push(FieldError::invalid(
                    &at.child("type"),
                    &go_value(&col["type"]),
                    &detail,
                ));
            }
            _ => {}
        }
        if col["jsonPath"].as_str().is_none_or(str::is_empty) {
            errs.push(FieldError::required(&at.child("JSONPath"), ""));
        }
    }
}

/// The conversion failure of servers without kubernetes#104969: a `null` enum member
/// in a version's schema leaves that schema per-version. Modelled for one version (the
/// real server's errors then also name every later version, left unconverted).
fn null_enum_before_fix(crd: &Value, version: ServerVersion) -> Option<FieldError> {
    let fixed = match version.minor {
        ..20 => false,
        20 => version.patch >= 12,
        21 => version.patch >= 6,
        22 => version.patch >= 3,
        _ => true,
    };
    let [only] = versions(crd) else {
        return None;
    };
    if fixed || !has_null_enum(&only["schema"]["openAPIV3Schema"]) {
        return None;
    }
    // `%#v` of the internal versions: the schema is a pointer, printed as an address.
    let go = format!(
        "[]apiextensions.CustomResourceDefinitionVersion{{apiextensions.CustomResourceDefinitionVersion{{Name:{}, Served:{}, Storage:{}, Deprecated:{}, DeprecationWarning:(*string)(nil), Schema:(*apiextensions.CustomResourceValidation)(0xc000a3c0f0), Subresources:(*apiextensions.CustomResourceSubresources)(nil), AdditionalPrinterColumns:[]apiextensions.CustomResourceColumnDefinition(nil)}}}}",
        go_value(&only["name"]),
        only["served"].as_bool().unwrap_or(false),
        only["storage"].as_bool().unwrap_or(false),
        only["deprecated"].as_bool().unwrap_or(false),
    );
    Some(FieldError::invalid(
        &Path::new("spec").child("versions"),
        &go,
        "per-version schemas may not all be set to identical values (top-level validation should be used instead)",
    ))
}

fn has_null_enum(s: &Value) -> bool {
    match s {
        Value::Object(map) => map.iter().any(|(k, v)| {
            (k == "enum" && v.as_array().is_some_and(|e| e.iter().any(Value::is_null)))
                || (k != "enum" && k != "default" && k != "example" && has_null_enum(v))
        }),
        Value::Array(items) => items.iter().any(has_null_enum),
        _ => false,
    }
}

/// `WarningsOnCreate` (1.34+): each format the server ignores, as
/// `GetUnrecognizedFormats` finds them.
fn warnings(crd: &Value, version: ServerVersion) -> Vec<String> {
    if version.minor < 34 {
        return Vec::new();
    }
    let mut formats = Vec::new();
    for v in versions(crd) {
        unrecognized_formats(&v["schema"]["openAPIV3Schema"], version, &mut formats);
    }
    formats
        .into_iter()
        .map(|f| format!("unrecognized format {}", field::go_quote(&f)))
        .collect()
}

fn unrecognized_formats(s: &Value, version: ServerVersion, out: &mut Vec<String>) {
    const STRING_FORMATS: [&str; 26] = [
        "bsonobjectid",
        "uri",
        "email",
        "hostname",
        "ipv4",
        "ipv6",
        "cidr",
        "mac",
        "uuid",
        "uuid3",
        "uuid4",
        "uuid5",
        "isbn",
        "isbn10",
        "isbn13",
        "creditcard",
        "ssn",
        "hexcolor",
        "rgbcolor",
        "byte",
        "password",
        "date",
        "duration",
        "datetime",
        "k8sshortname",
        "k8slongname",
    ];
    let Some(map) = s.as_object() else {
        return;
    };
    if let Some(format) = map
        .get("format")
        .and_then(Value::as_str)
        .filter(|f| !f.is_empty())
    {
        // The k8s-* names count from compatibility version 1.34, a 1.35 server.
        let known_strings = if version.minor >= 35 { 26 } else { 24 };
        let normalized = format.replace('-', "");
        let known = match map.get("type").and_then(Value::as_str).unwrap_or_default() {
            "" | "string" => STRING_FORMATS[..known_strings].contains(&normalized.as_str()),
            "integer" => matches!(format, "int32" | "int64"),
            "number" => matches!(format, "float" | "double"),
            _ => false,
        };
        if !known {
            out.push(format.to_owned());
        }
    }
    for (k, v) in map {
        if !matches!(k.as_str(), "default" | "enum" | "example") {
            match v {
                Value::Array(items) => items
                    .iter()
                    .for_each(|i| unrecognized_formats(i, version, out)),
                _ => unrecognized_formats(v, version, out),
            }
        }
    }
}

#[cfg(test)]
mod tests;
