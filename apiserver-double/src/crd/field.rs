//! Field errors as apimachinery's `util/validation/field` writes them: the path
//! (`spec.versions[0].schema.openAPIV3Schema.properties[spec].type`), the error type
//! and its body (`Required value: …`, `Unsupported value: "x": supported values: …`),
//! and Go's rendering of the bad value (`%q` for strings, `%v` for numbers, `%#v` for
//! maps and lists). The 422 `Invalid` Status built from them is `apierrors.NewInvalid`'s.

use http::StatusCode;
use serde_json::{Value, json};

/// A field path, rendered as `field.Path.String()` renders it.
#[derive(Clone, Debug)]
pub struct Path(String);

impl Path {
    pub fn new(root: &str) -> Self {
        Self(root.to_owned())
    }

    /// `a.b` (a dotted child).
    pub fn child(&self, name: &str) -> Self {
        Self(format!("{}.{name}", self.0))
    }

    /// `a[k]` (a map key).
    pub fn key(&self, key: &str) -> Self {
        Self(format!("{}[{key}]", self.0))
    }

    /// `a[3]` (a list index).
    pub fn index(&self, i: usize) -> Self {
        Self(format!("{}[{i}]", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One `field.Error`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The cause type (`FieldValueRequired`, ...).
    pub cause: &'static str,
    pub field: String,
    /// `ErrorBody()`: the message without the field.
    pub body: String,
}

impl FieldError {
    fn new(cause: &'static str, path: &Path, head: String, detail: &str) -> Self {
        let body = if detail.is_empty() {
            head
        } else {
            format!("{head}: {detail}")
        };
        Self {
            cause,
            field: path.as_str().to_owned(),
            body,
        }
    }

    pub fn required(path: &Path, detail: &str) -> Self {
        Self::new("FieldValueRequired", path, "Required value".into(), detail)
    }

    pub fn forbidden(path: &Path, detail: &str) -> Self {
        Self::new("FieldValueForbidden", path, "Forbidden".into(), detail)
    }

    /// `field.Invalid`; `value` is already rendered (see [`go_value`]).
    pub fn invalid(path: &Path, value: &str, detail: &str) -> Self {
        let head = format!("Invalid value: {value}");
        Self::new("FieldValueInvalid", path, head, detail)
    }

    /// `field.TypeInvalid`, as kube-openapi's type errors become.
    pub fn type_invalid(path: &Path, value: &str, detail: &str) -> Self {
        let head = format!("Invalid value: {value}");
        Self::new("FieldValueTypeInvalid", path, head, detail)
    }

    /// `field.NotSupported`: the supported values quoted and comma-separated.
    pub fn not_supported(path: &Path, value: &str, supported: &[&str]) -> Self {
        let quoted: Vec<String> = supported.iter().map(|s| go_quote(s)).collect();
        let detail = if quoted.is_empty() {
            String::new()
        } else {
            format!("supported values: {}", quoted.join(", "))
        };
        let head = format!("Unsupported value: {value}");
        Self::new("FieldValueNotSupported", path, head, &detail)
    }

    /// `Error()`: `FIELD: BODY`.
    pub fn message(&self) -> String {
        format!("{}: {}", self.field, self.body)
    }
}

/// Go's `%q` of a string (JSON's escaping matches it for what schemas hold).
pub(super) fn go_quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// A JSON value as `ErrorBody` prints a bad value: strings quoted, numbers and
/// booleans plain, `null` for nil, and Go's `%#v` of the decoded `interface{}` for
/// objects and arrays.
pub(super) fn go_value(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::String(s) => go_quote(s),
        Value::Bool(_) | Value::Number(_) => v.to_string(),
        Value::Array(_) | Value::Object(_) => go_sharp_v(v),
    }
}

/// `%#v` of what `encoding/json` decodes into `interface{}`.
fn go_sharp_v(v: &Value) -> String {
    match v {
        Value::Null => "interface {}(nil)".into(),
        Value::String(s) => go_quote(s),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.as_f64().map_or_else(|| n.to_string(), |f| f.to_string()),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(go_sharp_v).collect();
            format!("[]interface {{}}{{{}}}", items.join(", "))
        }
        Value::Object(map) => {
            // Go prints map keys sorted.
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let items: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", go_quote(k), go_sharp_v(&map[k])))
                .collect();
            format!("map[string]interface {{}}{{{}}}", items.join(", "))
        }
    }
}

/// `errs.ToAggregate().Error()`: one message alone, several (duplicates dropped) in
/// brackets.
pub(super) fn aggregate(errs: &[FieldError]) -> String {
    let mut seen: Vec<String> = Vec::new();
    for e in errs {
        let m = e.message();
        if !seen.contains(&m) {
            seen.push(m);
        }
    }
    match seen.as_slice() {
        [one] => one.clone(),
        _ => format!("[{}]", seen.join(", ")),
    }
}

/// `apierrors.NewInvalid` for `group`/`kind` `name`: a 422 `Invalid` Status whose
/// details list each error as a cause.
pub fn invalid_status(group: &str, kind: &str, name: &str, errs: &[FieldError]) -> Value {
    let causes: Vec<Value> = errs
        .iter()
        .map(|e| json!({"reason": e.cause, "message": e.body, "field": e.field}))
        .collect();
    let code = StatusCode::UNPROCESSABLE_ENTITY.as_u16();
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("{kind}.{group} {} is invalid: {}", go_quote(name), aggregate(errs)),
        "reason": "Invalid",
        "details": {"name": name, "group": group, "kind": kind, "causes": causes},
        "code": code,
    })
}
