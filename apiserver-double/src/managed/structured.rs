//! Objects as structured-merge-diff compares, merges and prunes them, path elements
//! read as [`fieldset`](super::fieldset) reads them: what changed from one object to
//! the next (`Compare`), a configuration merged into an object (`Merge`), and the
//! items a set names removed (`RemoveItems`).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::fieldset::{Set, elements, kind};
use crate::strategic::{merge_key, merges_as_set};

/// What changed from one object to the next (structured-merge-diff's `Compare`).
#[derive(Default)]
pub(super) struct Comparison {
    pub(super) added: Set,
    pub(super) removed: Set,
    pub(super) modified: Set,
}

pub(super) fn compare(old: &Value, new: &Value) -> Comparison {
    compare_containers(None, old, new).unwrap_or_default()
}

/// The comparison of two containers of the same shape (objects, or keyed lists and
/// sets) under `field`; `None` when either is a leaf or their shapes differ, which the
/// caller compares as values.
fn compare_containers(field: Option<&str>, old: &Value, new: &Value) -> Option<Comparison> {
    if old.is_object() != new.is_object() {
        return None;
    }
    let (old_elements, new_elements) = (elements(field, old)?, elements(field, new)?);
    let mut c = Comparison::default();
    let parent = kind(field, new);
    let old_by: BTreeMap<&String, (Option<&str>, &Value)> =
        old_elements.iter().map(|(e, f, v)| (e, (*f, *v))).collect();
    let new_by: BTreeMap<&String, (Option<&str>, &Value)> =
        new_elements.iter().map(|(e, f, v)| (e, (*f, *v))).collect();
    for (element, (child_field, new_value)) in &new_by {
        let Some((_, old_value)) = old_by.get(element) else {
            c.added.add_added(element, parent, *child_field, new_value);
            continue;
        };
        match compare_containers(*child_field, old_value, new_value) {
            Some(sub) => {
                for (set, part) in [
                    (&mut c.added, sub.added),
                    (&mut c.removed, sub.removed),
                    (&mut c.modified, sub.modified),
                ] {
                    if !part.is_empty() {
                        set.children.insert((*element).clone(), part);
                    }
                }
            }
            None if old_value != new_value => {
                c.modified
                    .children
                    .entry((*element).clone())
                    .or_default()
                    .member = true;
            }
            None => {}
        }
    }
    let old_parent = kind(field, old);
    for (element, (child_field, old_value)) in &old_by {
        if !new_by.contains_key(element) {
            c.removed
                .add_added(element, old_parent, *child_field, old_value);
        }
    }
    Some(c)
}

/// `value` without the items `set` names (whole subtrees for member paths).
pub(super) fn remove_items(field: Option<&str>, value: &mut Value, set: &Set) {
    match value {
        Value::Object(map) => {
            for (element, sub) in &set.children {
                let Some(name) = element.strip_prefix("f:") else {
                    continue;
                };
                if sub.member {
                    map.remove(name);
                } else if let Some(child) = map.get_mut(name) {
                    remove_items(Some(name), child, sub);
                    // Go leaves an emptied map or list out (`omitempty`).
                    if elements(Some(name), child).is_some_and(|e| e.is_empty()) {
                        map.remove(name);
                    }
                }
            }
        }
        Value::Array(items) => {
            let Some(field) = field else { return };
            let key = merge_key(field);
            items.retain_mut(|item| {
                let element = match (key, item.get(key.unwrap_or_default())) {
                    (Some(key), Some(k)) if item.is_object() => {
                        format!("k:{}", json!({ key: k }))
                    }
                    _ if merges_as_set(field) => format!("v:{item}"),
                    _ => return true,
                };
                match set.children.get(&element) {
                    Some(sub) if sub.member => false,
                    Some(sub) => {
                        remove_items(None, item, sub);
                        true
                    }
                    None => true,
                }
            });
        }
        _ => {}
    }
}

/// `config` merged into `live` (structured-merge-diff's `Merge`): maps and
/// associative lists merge, everything else is the configuration's.
pub(super) fn merge(field: Option<&str>, live: &Value, config: &Value) -> Value {
    match (live, config) {
        (Value::Object(l), Value::Object(c)) => {
            let mut out = l.clone();
            for (k, v) in c {
                let merged = match l.get(k) {
                    Some(lv) => merge(Some(k), lv, v),
                    None => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(c)) => {
            let keyed = field
                .and_then(merge_key)
                .filter(|key| l.iter().chain(c).all(|i| i.get(*key).is_some()));
            if let Some(key) = keyed {
                let mut out: Vec<Value> = l.clone();
                for item in c {
                    match out.iter_mut().find(|o| o[key] == item[key]) {
                        Some(existing) => *existing = merge(None, existing, item),
                        None => out.push(item.clone()),
                    }
                }
                Value::Array(out)
            } else if field.is_some_and(merges_as_set) {
                let mut out = l.clone();
                for item in c {
                    if !out.contains(item) {
                        out.push(item.clone());
                    }
                }
                Value::Array(out)
            } else {
                config.clone()
            }
        }
        _ => config.clone(),
    }
}
