//! Writes through masking: where a write carries kgate's placeholder in a field kgate
//! masks, the value stored in the cluster goes back in its place, so a client that
//! updates an object it could not fully read does not destroy what it could not see.
//!
//! - Object bodies (create, update, JSON merge patch, strategic merge patch,
//!   server-side apply): the masked fields are found by the masking rules themselves
//!   (Secret `data`/`stringData` keys, ConfigMap keys, `env` entries by container and
//!   variable name, annotations by name), and the same inside the
//!   `last-applied-configuration` annotation, whose values come back from the stored
//!   annotation first, then from the stored object.
//! - JSON patches: each `add`/`replace` is applied to a copy of the stored object to
//!   see where its value lands; a placeholder landing in a masked field is restored in
//!   the operation's value. A `test` of a masked field, or a `copy`/`move` from one,
//!   would let the client compare or read what it must not see: refused.
//! - A placeholder anywhere else (a field kgate does not mask, a key the stored object
//!   lacks, a new object) cannot be restored: an error, never forwarded.
//!
//! Pure functions over parsed bodies. Not here: reading the stored object, the body or
//! its encoding, and the `resourceVersion` guard (see [`guard`] for what it writes; the
//! stage in `proxy` decides when).

use base64::Engine as _;
use serde_json::{Map, Value};

use super::rules::{LAST_APPLIED, MASKED_BASE64, MASKED_TEXT, Rules, Target, mask_last_applied};

/// Why a write cannot go upstream as it is. Each is the client's doing: a 422.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    /// A placeholder in a masked field whose value the stored object does not have.
    #[error(
        "the write carries kgate's placeholder at {0}, and the stored object has no value there to restore"
    )]
    NoStoredValue(String),
    /// A placeholder where kgate never puts one, or in an object that does not exist.
    #[error(
        "the write carries kgate's placeholder at {0}, where kgate cannot restore a stored value"
    )]
    Unrestorable(String),
    /// A JSON patch `test` of a masked field, or a `copy`/`move` from one.
    #[error("JSON patch operation {index} ({op}) reads {path}, which kgate masks")]
    ReadsMasked {
        index: usize,
        op: String,
        path: String,
    },
    #[error("the JSON patch is malformed: {0}")]
    BadPatch(String),
    /// Applying the patch to the stored object failed, as it would upstream.
    #[error("JSON patch operation {index} does not apply to the stored object: {why}")]
    PatchFailed { index: usize, why: String },
}

impl RestoreError {
    /// The field (a JSON pointer) the error is about, when it is about one.
    pub fn field(&self) -> &str {
        match self {
            Self::NoStoredValue(at) | Self::Unrestorable(at) => at,
            Self::ReadsMasked { path, .. } => path,
            Self::BadPatch(_) | Self::PatchFailed { .. } => "",
        }
    }
}

/// What one write had restored: the fields, as JSON pointers (values never). Inside
/// the `last-applied-configuration` annotation, the annotation's pointer, `#`, and
/// the pointer within it.
pub(crate) type Restored = Vec<String>;

/// Whether `value` holds one of kgate's placeholders anywhere, also inside strings
/// (the `last-applied-configuration` annotation embeds a whole object as text).
/// Writes without one need no stored object.
pub(crate) fn has_placeholder(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains(MASKED_TEXT) || s.contains(MASKED_BASE64),
        Value::Array(items) => items.iter().any(has_placeholder),
        Value::Object(map) => map.values().any(has_placeholder),
        _ => false,
    }
}

/// Whether a JSON patch reads values (`test`, `copy`, `move`): it then needs the stored
/// object to tell whether it reads a masked field.
pub(crate) fn patch_reads(ops: &Value) -> bool {
    ops.as_array().is_some_and(|ops| {
        ops.iter()
            .any(|op| matches!(op["op"].as_str(), Some("test" | "copy" | "move")))
    })
}

/// Restores the placeholders of an object body from `stored` (`None`: the object does
/// not exist yet, so nothing can be restored).
pub(super) fn restore_object(
    rules: &Rules,
    target: Target,
    body: &mut Value,
    stored: Option<&Value>,
) -> Result<Restored, RestoreError> {
    let mut restored = Vec::new();
    if let Some(obj) = body.as_object_mut() {
        restore_fields(rules, target, obj, stored, "", &mut restored)?;
    }
    check_leftovers(body, "", &restored)?;
    Ok(restored)
}

/// Restores the placeholders in a JSON patch's values from `stored`, and refuses
/// operations that read masked fields.
pub(super) fn restore_json_patch(
    rules: &Rules,
    target: Target,
    ops: &mut Value,
    stored: &Value,
) -> Result<Restored, RestoreError> {
    let Some(ops) = ops.as_array_mut() else {
        return Err(RestoreError::BadPatch(
            "not a list of operations".to_owned(),
        ));
    };
    let mut doc = stored.clone();
    let mut restored = Vec::new();
    for (index, op) in ops.iter_mut().enumerate() {
        let kind = op["op"].as_str().unwrap_or_default().to_owned();
        let path = op["path"]
            .as_str()
            .ok_or_else(|| RestoreError::BadPatch(format!("operation {index} has no path")))?
            .to_owned();
        let read = match kind.as_str() {
            "test" => Some(path.clone()),
            "copy" | "move" => Some(op["from"].as_str().unwrap_or_default().to_owned()),
            _ => None,
        };
        if let Some(read) = read {
            let read_tokens = tokens(&read);
            if masked_pointers(rules, target, &doc)
                .iter()
                .any(|m| related(m, &read_tokens))
            {
                return Err(RestoreError::ReadsMasked {
                    index,
                    op: kind,
                    path: read,
                });
            }
        }
        let single: json_patch::Patch = serde_json::from_value(Value::Array(vec![op.clone()]))
            .map_err(|e| RestoreError::BadPatch(format!("operation {index}: {e}")))?;
        json_patch::patch(&mut doc, &single).map_err(|e| RestoreError::PatchFailed {
            index,
            why: e.to_string(),
        })?;
        if !matches!(kind.as_str(), "add" | "replace") || !has_placeholder(&op["value"]) {
            continue;
        }
        // Where the value landed, the placeholders are restored as in an object body;
        // then the same values go into the operation's value.
        let at = tokens(&path);
        let mut found = Vec::new();
        if let Some(obj) = doc.as_object_mut() {
            restore_fields(rules, target, obj, Some(stored), "", &mut found)?;
        }
        let landed = pointer_of(&landing(&at, &doc));
        let value = op.get_mut("value").expect("add and replace carry a value");
        for field in &found {
            let (outer, _) = field.split_once('#').unwrap_or((field, ""));
            let Some(rel) = outer.strip_prefix(&landed) else {
                continue;
            };
            if !(rel.is_empty() || rel.starts_with('/')) {
                continue;
            }
            let new = doc.pointer(outer).cloned().unwrap_or(Value::Null);
            let slot = value
                .pointer_mut(rel)
                .ok_or_else(|| RestoreError::Unrestorable(field.clone()))?;
            *slot = new;
            restored.push(field.clone());
        }
        check_leftovers(value, &landed, &found)?;
    }
    Ok(restored)
}

/// The body's `resourceVersion` precondition: the version the restored values were
/// read from. A client's own precondition stays (if it differs, the API server refuses
/// the write with its 409 and nothing restored is stored). A JSON patch gets a
/// `replace` of `/metadata/resourceVersion` first, which the API server checks as a
/// precondition in the same way.
pub(crate) fn guard(body: &mut Value, json_patch: bool, resource_version: &str) {
    if json_patch {
        if let Some(ops) = body.as_array_mut() {
            ops.insert(
                0,
                serde_json::json!({"op": "replace", "path": "/metadata/resourceVersion", "value": resource_version}),
            );
        }
        return;
    }
    let Some(obj) = body.as_object_mut() else {
        return;
    };
    let metadata = obj
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(metadata) = metadata.as_object_mut()
        && metadata
            .get("resourceVersion")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        metadata.insert(
            "resourceVersion".to_owned(),
            Value::String(resource_version.to_owned()),
        );
    }
}

// === masked fields ===

/// One field masking would replace, and how to find the same field in another object
/// of the kind (list positions differ between a write and the stored object).
#[derive(Debug)]
struct Field {
    pointer: Vec<String>,
    placeholder: &'static str,
    key: Key,
}

#[derive(Debug)]
enum Key {
    /// `object[map][key]`: Secret `data`, ConfigMap `data` and `binaryData`.
    Map(&'static str, String),
    /// Secret `stringData`: write-only, stored base64 in `data`.
    StringData(String),
    /// An `env` entry's `value`, by container list, container name and variable name.
    Env {
        spec: &'static [&'static str],
        list: &'static str,
        container: String,
        var: String,
    },
    Annotation(String),
}

/// Every field of `obj` that masking replaces, with its placeholder.
fn masked_fields(rules: &Rules, target: Target, obj: &Map<String, Value>) -> Vec<Field> {
    let mut fields = Vec::new();
    let mut map_fields = |map: &'static str, placeholder, select: &dyn Fn(&str) -> bool| {
        if let Some(Value::Object(values)) = obj.get(map) {
            for key in values.keys().filter(|k| select(k)) {
                fields.push(Field {
                    pointer: vec![map.to_owned(), key.clone()],
                    placeholder,
                    key: if map == "stringData" {
                        Key::StringData(key.clone())
                    } else {
                        Key::Map(map, key.clone())
                    },
                });
            }
        }
    };
    match target {
        Target::Secret => {
            map_fields("data", MASKED_BASE64, &|_| true);
            map_fields("stringData", MASKED_TEXT, &|_| true);
        }
        Target::ConfigMap => {
            if let Some(keys) = &rules.config_map_keys {
                map_fields("data", MASKED_TEXT, &|k| keys.is_match(k));
                map_fields("binaryData", MASKED_BASE64, &|k| keys.is_match(k));
            }
        }
        Target::PodSpec(spec) => {
            if let Some(names) = &rules.env_names {
                env_fields(obj, spec, names, &mut fields);
            }
        }
        Target::Other => {}
    }
    if let Some(Value::Object(annotations)) = obj.get("metadata").and_then(|m| m.get("annotations"))
    {
        for name in rules
            .annotations
            .iter()
            .filter(|n| annotations.contains_key(*n))
        {
            fields.push(Field {
                pointer: vec!["metadata".into(), "annotations".into(), name.clone()],
                placeholder: MASKED_TEXT,
                key: Key::Annotation(name.clone()),
            });
        }
    }
    fields
}

fn env_fields(
    obj: &Map<String, Value>,
    spec: &'static [&'static str],
    names: &regex::RegexSet,
    fields: &mut Vec<Field>,
) {
    let Some(spec_value) = walk(obj, spec) else {
        return;
    };
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        let Some(Value::Array(containers)) = spec_value.get(list) else {
            continue;
        };
        for (c, container) in containers.iter().enumerate() {
            let Some(Value::Array(env)) = container.get("env") else {
                continue;
            };
            let name = container["name"].as_str().unwrap_or_default();
            for (e, var) in env.iter().enumerate() {
                let Some(var_name) = var["name"].as_str().filter(|n| names.is_match(n)) else {
                    continue;
                };
                if var.get("value").is_none() {
                    continue;
                }
                let mut pointer: Vec<String> = spec.iter().map(|s| (*s).to_owned()).collect();
                pointer.extend([list.to_owned(), c.to_string(), "env".into(), e.to_string()]);
                pointer.push("value".into());
                fields.push(Field {
                    pointer,
                    placeholder: MASKED_TEXT,
                    key: Key::Env {
                        spec,
                        list,
                        container: name.to_owned(),
                        var: var_name.to_owned(),
                    },
                });
            }
        }
    }
}

/// The JSON pointers (as tokens) of every masked field of `doc`, the
/// `last-applied-configuration` annotation included (it embeds them).
fn masked_pointers(rules: &Rules, target: Target, doc: &Value) -> Vec<Vec<String>> {
    let Some(obj) = doc.as_object() else {
        return Vec::new();
    };
    let mut pointers: Vec<Vec<String>> = masked_fields(rules, target, obj)
        .into_iter()
        .map(|f| f.pointer)
        .collect();
    if obj
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get(LAST_APPLIED))
        .is_some()
    {
        pointers.push(vec![
            "metadata".into(),
            "annotations".into(),
            LAST_APPLIED.into(),
        ]);
    }
    pointers
}

/// The value of `key` in `stored`, if it has one.
fn lookup(key: &Key, stored: &Value) -> Option<Value> {
    match key {
        Key::Map(map, k) => stored.get(*map)?.get(k).cloned(),
        Key::StringData(k) => {
            if let Some(v) = stored.get("stringData").and_then(|d| d.get(k)) {
                return Some(v.clone());
            }
            // Stored Secrets keep stringData folded into data, as base64.
            let encoded = stored.get("data")?.get(k)?.as_str()?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()?;
            String::from_utf8(bytes).ok().map(Value::String)
        }
        Key::Env {
            spec,
            list,
            container,
            var,
        } => {
            let spec_value = walk(stored.as_object()?, spec)?;
            let containers = spec_value.get(*list)?.as_array()?;
            let c = containers
                .iter()
                .find(|c| c["name"].as_str() == Some(container))?;
            let v = c
                .get("env")?
                .as_array()?
                .iter()
                .find(|v| v["name"].as_str() == Some(var))?;
            v.get("value").cloned()
        }
        Key::Annotation(name) => stored
            .get("metadata")?
            .get("annotations")?
            .get(name)
            .cloned(),
    }
}

// === restoring ===

/// Restores the masked fields of `obj` that hold their placeholder, from the first of
/// the stored objects that has the field; then the `last-applied-configuration`
/// annotation inside. `prefix` is prepended to the pointers recorded.
fn restore_fields(
    rules: &Rules,
    target: Target,
    obj: &mut Map<String, Value>,
    stored: Option<&Value>,
    prefix: &str,
    restored: &mut Restored,
) -> Result<(), RestoreError> {
    restore_in(
        rules,
        target,
        obj,
        &stored.into_iter().collect::<Vec<_>>(),
        prefix,
        restored,
    )?;
    let Some(Value::String(applied)) = obj
        .get_mut("metadata")
        .and_then(|m| m.get_mut("annotations"))
        .and_then(|a| a.get_mut(LAST_APPLIED))
    else {
        return Ok(());
    };
    let at = format!("{prefix}{}", last_applied_pointer());
    let stored_applied = stored.and_then(|s| {
        s.get("metadata")?
            .get("annotations")?
            .get(LAST_APPLIED)?
            .as_str()
    });
    // Not JSON when read: masking replaced it whole.
    if applied == MASKED_TEXT {
        let stored_applied =
            stored_applied.ok_or_else(|| RestoreError::NoStoredValue(at.clone()))?;
        if mask_last_applied(rules, target, stored_applied).as_deref() != Some(MASKED_TEXT) {
            // The stored annotation is JSON: a whole placeholder is not what kgate sent.
            return Err(RestoreError::Unrestorable(at));
        }
        *applied = stored_applied.to_owned();
        restored.push(at);
        return Ok(());
    }
    if !(applied.contains(MASKED_TEXT) || applied.contains(MASKED_BASE64)) {
        return Ok(());
    }
    let Ok(Value::Object(mut inner)) = serde_json::from_str::<Value>(applied) else {
        return Err(RestoreError::Unrestorable(at));
    };
    let stored_inner: Option<Value> = stored_applied.and_then(|s| serde_json::from_str(s).ok());
    let stores: Vec<&Value> = stored_inner.iter().chain(stored).collect();
    let mut inner_restored = Vec::new();
    let inner_prefix = format!("{at}#");
    restore_in(
        rules,
        target,
        &mut inner,
        &stores,
        &inner_prefix,
        &mut inner_restored,
    )?;
    let inner = Value::Object(inner);
    check_leftovers(&inner, &inner_prefix, &inner_restored)?;
    let mut text = serde_json::to_string(&inner)
        .map_err(|e| RestoreError::Unrestorable(format!("{at} ({e})")))?;
    if applied.ends_with('\n') {
        text.push('\n');
    }
    *applied = text;
    restored.extend(inner_restored);
    Ok(())
}

fn restore_in(
    rules: &Rules,
    target: Target,
    obj: &mut Map<String, Value>,
    stores: &[&Value],
    prefix: &str,
    restored: &mut Restored,
) -> Result<(), RestoreError> {
    for field in masked_fields(rules, target, obj) {
        let Some(slot) = walk_mut(obj, &field.pointer) else {
            continue;
        };
        if slot.as_str() != Some(field.placeholder) {
            continue;
        }
        let at = format!("{prefix}{}", pointer_of(&field.pointer));
        if stores.is_empty() {
            return Err(RestoreError::Unrestorable(format!(
                "{at} (the object does not exist yet)"
            )));
        }
        let value = stores
            .iter()
            .find_map(|s| lookup(&field.key, s))
            .ok_or_else(|| RestoreError::NoStoredValue(at.clone()))?;
        *slot = value;
        restored.push(at);
    }
    Ok(())
}

/// Any placeholder left in `value` (whose pointer is `prefix`) that was not restored:
/// the first one, as an error. The `last-applied-configuration` annotation is
/// checked inside, by `restore_fields`.
fn check_leftovers(value: &Value, prefix: &str, restored: &[String]) -> Result<(), RestoreError> {
    fn walk_left(value: &Value, here: &mut String, restored: &[String]) -> Result<(), String> {
        match value {
            Value::String(s) if s == MASKED_TEXT || s == MASKED_BASE64 => {
                if restored.contains(here) {
                    Ok(())
                } else {
                    Err(here.clone())
                }
            }
            Value::Array(items) => items.iter().enumerate().try_for_each(|(i, v)| {
                let len = here.len();
                here.push_str(&format!("/{i}"));
                let r = walk_left(v, here, restored);
                here.truncate(len);
                r
            }),
            Value::Object(map) => map.iter().try_for_each(|(k, v)| {
                let len = here.len();
                here.push_str(&pointer_of(std::slice::from_ref(k)));
                let r = if *here == last_applied_pointer() {
                    Ok(())
                } else {
                    walk_left(v, here, restored)
                };
                here.truncate(len);
                r
            }),
            _ => Ok(()),
        }
    }
    walk_left(value, &mut prefix.to_owned(), restored).map_err(RestoreError::Unrestorable)
}

fn last_applied_pointer() -> String {
    pointer_of(&["metadata".into(), "annotations".into(), LAST_APPLIED.into()])
}

// === JSON pointers ===

/// RFC 6901 reference tokens of a pointer.
fn tokens(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .skip(1)
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect()
}

fn pointer_of(tokens: &[String]) -> String {
    tokens
        .iter()
        .map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1")))
        .collect()
}

/// Where an `add` landed: `-` (past the end of an array) is the array's last item now.
fn landing(at: &[String], doc: &Value) -> Vec<String> {
    let mut at = at.to_vec();
    if at.last().is_some_and(|t| t == "-") {
        at.pop();
        let len = doc
            .pointer(&pointer_of(&at))
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        at.push(len.saturating_sub(1).to_string());
    }
    at
}

/// One pointer is a prefix of the other: reading one reads (part of) the other.
fn related(a: &[String], b: &[String]) -> bool {
    a.iter().zip(b).all(|(x, y)| x == y)
}

fn walk<'a>(obj: &'a Map<String, Value>, path: &[&str]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    rest.iter().try_fold(obj.get(*first)?, |v, key| v.get(*key))
}

fn walk_mut<'a>(obj: &'a mut Map<String, Value>, path: &[String]) -> Option<&'a mut Value> {
    let (first, rest) = path.split_first()?;
    rest.iter().try_fold(obj.get_mut(first)?, |v, key| match v {
        Value::Array(items) => items.get_mut(key.parse::<usize>().ok()?),
        Value::Object(map) => map.get_mut(key),
        _ => None,
    })
}

#[cfg(test)]
mod tests;
