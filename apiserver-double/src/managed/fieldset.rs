//! Field sets: which paths of an object a manager owns, in the shape of `fieldsV1`, and
//! how structured-merge-diff reads an object into one (`ToFieldSet`): struct fields
//! are owned only as leaves, map and list items each on their own.
//!
//! Not here: comparing or merging objects (`structured`), or the entries that hold
//! the sets (the parent module).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::strategic::{merge_key, merges_as_set};

/// The fields the field manager never records (its `stripSet`).
const STRIPPED_META: &[&str] = &[
    "name",
    "namespace",
    "creationTimestamp",
    "selfLink",
    "uid",
    "clusterName",
    "generation",
    "managedFields",
    "resourceVersion",
];

/// A set of field paths in the shape of `fieldsV1`: children by path element
/// (`f:NAME`, `k:{"KEY":VALUE}`, `v:VALUE`), and whether the path itself is a member.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Set {
    pub(super) member: bool,
    pub(super) children: BTreeMap<String, Set>,
}

/// Fields whose value is a map (their keys are map items, each owned on its own), as
/// the built-in types declare them; every other object is a struct of named fields.
const MAP_FIELDS: &[&str] = &[
    "data",
    "stringData",
    "binaryData",
    "labels",
    "annotations",
    "matchLabels",
    "nodeSelector",
    "limits",
    "requests",
    "capacity",
    "allocatable",
];

/// Objects the types declare atomic (`LabelSelector`): owned and replaced whole.
const ATOMIC_FIELDS: &[&str] = &["selector"];

/// What a value is to the field manager.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A scalar, null, an atomic list or an atomic object.
    Leaf,
    /// An object of named fields: a field is owned only as a leaf.
    Struct,
    /// An object whose keys are items: each is owned.
    Map,
    /// A list keyed by a merge key, or a set of scalars: each item is owned.
    List,
}

pub(super) fn kind(field: Option<&str>, value: &Value) -> Kind {
    match value {
        Value::Object(_) if field.is_some_and(|f| ATOMIC_FIELDS.contains(&f)) => Kind::Leaf,
        Value::Object(_) if field.is_some_and(|f| MAP_FIELDS.contains(&f)) => Kind::Map,
        Value::Object(_) => Kind::Struct,
        Value::Array(_) if elements(field, value).is_some() => Kind::List,
        _ => Kind::Leaf,
    }
}

/// The children of a value as path elements: an object's fields, an associative
/// list's items by key, a set's values, each with the field name its own children
/// are read under. `None` for a leaf (scalar, null, atomic list).
pub(super) fn elements<'a>(
    field: Option<&str>,
    value: &'a Value,
) -> Option<Vec<(String, Option<&'a str>, &'a Value)>> {
    match value {
        Value::Object(_) if field.is_some_and(|f| ATOMIC_FIELDS.contains(&f)) => None,
        Value::Object(map) => Some(
            map.iter()
                .map(|(k, v)| (format!("f:{k}"), Some(k.as_str()), v))
                .collect(),
        ),
        Value::Array(items) => {
            let field = field?;
            if merges_as_set(field) && items.iter().all(|i| !i.is_object() && !i.is_array()) {
                return Some(items.iter().map(|i| (format!("v:{i}"), None, i)).collect());
            }
            let key = merge_key(field)?;
            if !items.iter().all(|i| i.get(key).is_some()) {
                return None;
            }
            Some(
                items
                    .iter()
                    .map(|i| (format!("k:{}", json!({ key: i[key] })), None, i))
                    .collect(),
            )
        }
        _ => None,
    }
}

impl Set {
    /// Every path in `value` (its `ToFieldSet`).
    pub(crate) fn of(value: &Value) -> Self {
        let mut set = Self::default();
        set.add_value(None, value);
        set
    }

    /// Adds `value`'s paths as `ToFieldSet` does: leaves, map items and list items
    /// are members; a struct field with children is not.
    pub(super) fn add_value(&mut self, field: Option<&str>, value: &Value) {
        let item = matches!(kind(field, value), Kind::Map | Kind::List);
        for (element, child_field, child) in elements(field, value).unwrap_or_default() {
            let node = self.children.entry(element).or_default();
            node.member |= item || kind(child_field, child) == Kind::Leaf;
            node.add_value(child_field, child);
        }
    }

    /// Adds a field that an update added (`Compare`'s `Added`): as in
    /// [`Set::add_value`], and the field itself when it is a map, a list or empty.
    pub(super) fn add_added(
        &mut self,
        element: &str,
        parent: Kind,
        field: Option<&str>,
        value: &Value,
    ) {
        let node = self.children.entry(element.to_owned()).or_default();
        let empty = elements(field, value).is_some_and(|e| e.is_empty());
        node.member |=
            matches!(parent, Kind::Map | Kind::List) || kind(field, value) != Kind::Struct || empty;
        node.add_value(field, value);
    }

    pub(crate) fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    pub(crate) fn union(&self, other: &Self) -> Self {
        let mut out = self.clone();
        out.member |= other.member;
        for (k, v) in &other.children {
            let merged = match out.children.get(k) {
                Some(mine) => mine.union(v),
                None => v.clone(),
            };
            out.children.insert(k.clone(), merged);
        }
        out
    }

    pub(crate) fn difference(&self, other: &Self) -> Self {
        let mut out = Self {
            member: self.member && !other.member,
            children: BTreeMap::new(),
        };
        for (k, v) in &self.children {
            let left = match other.children.get(k) {
                Some(theirs) => v.difference(theirs),
                None => v.clone(),
            };
            if !left.is_empty() {
                out.children.insert(k.clone(), left);
            }
        }
        out
    }

    pub(crate) fn intersection(&self, other: &Self) -> Self {
        let mut out = Self {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (k, v) in &self.children {
            if let Some(theirs) = other.children.get(k) {
                let both = v.intersection(theirs);
                if !both.is_empty() {
                    out.children.insert(k.clone(), both);
                }
            }
        }
        out
    }

    /// Without the fields the field manager never records.
    pub(super) fn stripped(mut self) -> Self {
        self.children.remove("f:apiVersion");
        self.children.remove("f:kind");
        if let Some(meta) = self.children.get_mut("f:metadata") {
            meta.member = false;
            for f in STRIPPED_META {
                meta.children.remove(&format!("f:{f}"));
            }
            if meta.is_empty() {
                self.children.remove("f:metadata");
            }
        }
        self
    }

    /// As `fieldsV1`: `"."` marks a member that also has children.
    pub(crate) fn to_fields_v1(&self) -> Value {
        let mut map = Map::new();
        if self.member && !self.children.is_empty() {
            map.insert(".".into(), json!({}));
        }
        for (k, v) in &self.children {
            map.insert(k.clone(), v.to_fields_v1());
        }
        Value::Object(map)
    }

    pub(crate) fn from_fields_v1(value: &Value) -> Self {
        let mut set = Self::default();
        if let Value::Object(map) = value {
            for (k, v) in map {
                if k == "." {
                    continue;
                }
                let mut child = Self::from_fields_v1(v);
                child.member = v
                    .as_object()
                    .is_none_or(|m| m.is_empty() || m.contains_key("."));
                set.children.insert(k.clone(), child);
            }
        }
        set
    }

    /// Each member path, as the API server prints one (`.spec.containers[name="app"].image`).
    pub(crate) fn paths(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect_paths("", &mut out);
        out
    }

    fn collect_paths(&self, prefix: &str, out: &mut Vec<String>) {
        if self.member && !prefix.is_empty() {
            out.push(prefix.to_owned());
        }
        for (k, v) in &self.children {
            v.collect_paths(&format!("{prefix}{}", print_element(k)), out);
        }
    }
}

fn print_element(element: &str) -> String {
    if let Some(name) = element.strip_prefix("f:") {
        format!(".{name}")
    } else if let Some(key) = element.strip_prefix("k:") {
        let fields: Map<String, Value> = serde_json::from_str(key).unwrap_or_default();
        let inner: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("[{}]", inner.join(","))
    } else if let Some(value) = element.strip_prefix("v:") {
        format!("[={value}]")
    } else {
        element.to_owned()
    }
}
