//! Managed fields and server-side apply, as kube-apiserver's field manager keeps them
//! (k8s.io/apimachinery `managedfields`, over sigs.k8s.io/structured-merge-diff):
//!
//! - Every create, update and patch records in `metadata.managedFields` which fields
//!   its manager (`?fieldManager=`, else the User-Agent up to its first `/`) set or
//!   changed, as an `Update` entry; the fields change hands from whoever held them.
//! - An apply (`application/apply-patch+yaml`) merges the configuration into the
//!   object (creating it if there is none), owns exactly the configuration's fields
//!   as the manager's `Apply` entry, removes what the manager applied last time and
//!   no applier claims now, and is refused with a 409 listing each field another
//!   manager holds and the apply would change, unless `force=true` takes them.
//! - `apiVersion`, `kind`, `metadata` itself and its server-set fields are never
//!   owned; entries come out sorted (`Apply` before `Update`, then by time and name),
//!   and a write that changes no field leaves the entries as they were.
//!
//! Lists of objects are keyed as strategic merge patch keys them
//! ([`crate::strategic::merge_key`], a single key: the real `ports` key is
//! `containerPort` and `protocol`), `finalizers` is a set, every other list is atomic.
//! Not here: version conversion of entries, the cap of ten `Update` entries, the
//! `[{}]` reset, CRD schemas' `x-kubernetes-list-type`, the `status` reset of
//! objects with a status subresource, and the interplay with client-side apply's
//! `last-applied-configuration` (the real server updates the annotation on apply, and
//! lets an apply take fields the annotation shows `kubectl-client-side-apply` set).

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
    member: bool,
    children: BTreeMap<String, Set>,
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
enum Kind {
    /// A scalar, null, an atomic list or an atomic object.
    Leaf,
    /// An object of named fields: a field is owned only as a leaf.
    Struct,
    /// An object whose keys are items: each is owned.
    Map,
    /// A list keyed by a merge key, or a set of scalars: each item is owned.
    List,
}

fn kind(field: Option<&str>, value: &Value) -> Kind {
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
fn elements<'a>(
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
    fn add_value(&mut self, field: Option<&str>, value: &Value) {
        let item = matches!(kind(field, value), Kind::Map | Kind::List);
        for (element, child_field, child) in elements(field, value).unwrap_or_default() {
            let node = self.children.entry(element).or_default();
            node.member |= item || kind(child_field, child) == Kind::Leaf;
            node.add_value(child_field, child);
        }
    }

    /// Adds a field that an update added (`Compare`'s `Added`): as in
    /// [`Set::add_value`], and the field itself when it is a map, a list or empty.
    fn add_added(&mut self, element: &str, parent: Kind, field: Option<&str>, value: &Value) {
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
    fn stripped(mut self) -> Self {
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

/// What changed from one object to the next (structured-merge-diff's `Compare`).
#[derive(Default)]
struct Comparison {
    added: Set,
    removed: Set,
    modified: Set,
}

fn compare(old: &Value, new: &Value) -> Comparison {
    let mut c = Comparison::default();
    compare_into(
        None,
        old,
        new,
        &mut c.added,
        &mut c.removed,
        &mut c.modified,
    );
    c
}

fn compare_into(
    field: Option<&str>,
    old: &Value,
    new: &Value,
    added: &mut Set,
    removed: &mut Set,
    modified: &mut Set,
) {
    let (Some(old_elements), Some(new_elements)) = (elements(field, old), elements(field, new))
    else {
        return;
    };
    let parent = kind(field, new);
    let old_by: BTreeMap<&String, (Option<&str>, &Value)> =
        old_elements.iter().map(|(e, f, v)| (e, (*f, *v))).collect();
    let new_by: BTreeMap<&String, (Option<&str>, &Value)> =
        new_elements.iter().map(|(e, f, v)| (e, (*f, *v))).collect();
    for (element, (child_field, new_value)) in &new_by {
        match old_by.get(element) {
            None => added.add_added(element, parent, *child_field, new_value),
            Some((_, old_value)) => {
                let containers = elements(*child_field, old_value).is_some()
                    && elements(*child_field, new_value).is_some()
                    && old_value.is_object() == new_value.is_object();
                if containers {
                    let (mut a, mut r, mut m) = (Set::default(), Set::default(), Set::default());
                    compare_into(*child_field, old_value, new_value, &mut a, &mut r, &mut m);
                    for (set, sub) in [(&mut *added, a), (&mut *removed, r), (&mut *modified, m)] {
                        if !sub.is_empty() {
                            set.children.insert((*element).clone(), sub);
                        }
                    }
                } else if old_value != new_value {
                    modified
                        .children
                        .entry((*element).clone())
                        .or_default()
                        .member = true;
                }
            }
        }
    }
    let old_parent = kind(field, old);
    for (element, (child_field, old_value)) in &old_by {
        if !new_by.contains_key(element) {
            removed.add_added(element, old_parent, *child_field, old_value);
        }
    }
}

/// `value` without the items `set` names (whole subtrees for member paths).
fn remove_items(field: Option<&str>, value: &mut Value, set: &Set) {
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
fn merge(field: Option<&str>, live: &Value, config: &Value) -> Value {
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

/// One `managedFields` entry, its set parsed.
#[derive(Clone, Debug)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: Option<String>,
    subresource: Option<String>,
    set: Set,
}

impl Entry {
    fn same_manager(&self, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource
    }

    /// As the conflict message names it.
    fn printed(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if let Some(sub) = &self.subresource {
            s.push_str(&format!(" with subresource {sub:?}"));
        }
        if self.operation == "Update" {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }

    fn to_json(&self) -> Value {
        let mut e = json!({
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
        });
        if let Some(time) = &self.time {
            e["time"] = json!(time);
        }
        e["fieldsType"] = json!("FieldsV1");
        e["fieldsV1"] = self.set.to_fields_v1();
        if let Some(sub) = &self.subresource {
            e["subresource"] = json!(sub);
        }
        e
    }
}

fn read_entries(obj: &Value) -> Vec<Entry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some(Entry {
                manager: e["manager"].as_str().unwrap_or_default().to_owned(),
                operation: e["operation"].as_str()?.to_owned(),
                api_version: e["apiVersion"].as_str().unwrap_or_default().to_owned(),
                time: e["time"].as_str().map(str::to_owned),
                subresource: e["subresource"].as_str().map(str::to_owned),
                set: Set::from_fields_v1(&e["fieldsV1"]),
            })
        })
        .collect()
}

/// Writes `entries` into `obj`, sorted as the API server encodes them; none: removed.
fn write_entries(obj: &mut Value, mut entries: Vec<Entry>) {
    entries.retain(|e| !e.set.is_empty());
    entries.sort_by(|a, b| {
        (&a.operation, &a.time, &a.manager).cmp(&(&b.operation, &b.time, &b.manager))
    });
    let Some(meta) = obj["metadata"].as_object_mut() else {
        return;
    };
    if entries.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert(
            "managedFields".into(),
            Value::Array(entries.iter().map(Entry::to_json).collect()),
        );
    }
}

/// The object as the field manager compares it: without its managed fields.
fn bare(obj: &Value) -> Value {
    let mut obj = obj.clone();
    if let Some(meta) = obj["metadata"].as_object_mut() {
        meta.remove("managedFields");
    }
    obj
}

/// Who writes, and how.
pub(crate) struct Writer {
    pub manager: String,
    pub api_version: String,
    pub subresource: Option<String>,
    pub time: String,
}

/// Records a create (`old` none) or an update, patch or subresource write in `new`'s
/// managed fields. Entries `new` carries replace the stored ones, as a client that
/// sends them back means them; without any, the stored ones stay.
pub(crate) fn track_update(old: Option<&Value>, new: &mut Value, w: &Writer) {
    let empty = json!({});
    let old = old.unwrap_or(&empty);
    let mut entries = read_entries(new);
    if entries.is_empty() {
        entries = read_entries(old);
    }
    let c = compare(&bare(old), &bare(new));
    let taken = c.modified.union(&c.added);
    for e in &mut entries {
        if !e.same_manager(&w.manager, "Update", w.subresource.as_deref()) {
            e.set = e.set.difference(&taken).difference(&c.removed);
        }
    }
    let gained = taken.difference(&c.removed).stripped();
    match entries
        .iter_mut()
        .find(|e| e.same_manager(&w.manager, "Update", w.subresource.as_deref()))
    {
        Some(mine) => {
            // Any field the write changed renews the entry's time (the updater's
            // "took any fields").
            let set = mine.set.union(&gained).difference(&c.removed);
            if !gained.is_empty() || set != mine.set || mine.api_version != w.api_version {
                mine.set = set;
                mine.api_version = w.api_version.clone();
                mine.time = Some(w.time.clone());
            }
        }
        None => entries.push(Entry {
            manager: w.manager.clone(),
            operation: "Update".into(),
            api_version: w.api_version.clone(),
            time: Some(w.time.clone()),
            subresource: w.subresource.clone(),
            set: gained,
        }),
    }
    write_entries(new, entries);
}

/// Fields another manager holds that an apply would change.
#[derive(Debug)]
pub(crate) struct Conflicts(Vec<(String, String)>);

impl Conflicts {
    /// The 409 Status body's message and causes, as `NewConflictError` writes them.
    pub(crate) fn message_and_causes(&self) -> (String, Value) {
        let causes: Vec<Value> = self
            .0
            .iter()
            .map(|(manager, path)| {
                json!({"reason": "FieldManagerConflict", "message": format!("conflict with {manager}"), "field": path})
            })
            .collect();
        let message = if let [(manager, path)] = self.0.as_slice() {
            format!("Apply failed with 1 conflict: conflict with {manager}: {path}")
        } else {
            let mut by: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for (manager, path) in &self.0 {
                by.entry(manager).or_default().push(path);
            }
            let mut lines = Vec::new();
            for (manager, paths) in by {
                lines.push(format!("conflicts with {manager}:"));
                lines.extend(paths.iter().map(|p| format!("- {p}")));
            }
            format!(
                "Apply failed with {} conflicts: {}",
                self.0.len(),
                lines.join("\n")
            )
        };
        (message, Value::Array(causes))
    }
}

/// Applies `config` to `live` (none: the object is created) as `w.manager`:
/// the object to store, its managed fields written, or the conflicts.
pub(crate) fn apply(
    live: Option<&Value>,
    config: &Value,
    w: &Writer,
    force: bool,
) -> Result<Value, Conflicts> {
    let empty = json!({});
    let live = live.unwrap_or(&empty);
    let mut entries = read_entries(live);
    let live_bare = bare(live);
    if entries.is_empty() && live != &empty {
        // An object no one has managed yet: its fields are held by
        // `before-first-apply`, so a first apply cannot silently overwrite them.
        entries.push(Entry {
            manager: "before-first-apply".into(),
            operation: "Update".into(),
            api_version: w.api_version.clone(),
            time: Some(w.time.clone()),
            subresource: None,
            set: Set::of(&live_bare).stripped(),
        });
    }
    let mut merged = merge(None, &live_bare, config);
    let applied = Set::of(config).stripped();
    let mine = |e: &Entry| e.same_manager(&w.manager, "Apply", w.subresource.as_deref());
    let last = entries.iter().find(|e| mine(e)).map(|e| e.set.clone());
    // Prune: what this manager applied last time, applies no more, and no applier
    // (this configuration included) claims.
    if let Some(last) = last {
        let claimed = entries
            .iter()
            .filter(|e| e.operation == "Apply" && !mine(e))
            .fold(applied.clone(), |acc, e| acc.union(&e.set));
        remove_items(None, &mut merged, &last.difference(&claimed));
    }
    let c = compare(&live_bare, &merged);
    let changed = c.modified.union(&c.added);
    let mut conflicts = Vec::new();
    for e in entries.iter().filter(|e| !mine(e)) {
        for path in e.set.intersection(&changed).paths() {
            conflicts.push((e.printed(), path));
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(Conflicts(conflicts));
    }
    for e in entries.iter_mut().filter(|e| !mine(e)) {
        e.set = e.set.difference(&changed).difference(&c.removed);
    }
    let before_mine = entries.iter().find(|e| mine(e)).cloned();
    entries.retain(|e| !mine(e));
    let unchanged = before_mine.as_ref().is_some_and(|b| {
        b.set == applied
            && b.api_version == w.api_version
            && c.added.is_empty()
            && c.modified.is_empty()
            && c.removed.is_empty()
    });
    entries.push(Entry {
        manager: w.manager.clone(),
        operation: "Apply".into(),
        api_version: w.api_version.clone(),
        time: if unchanged {
            before_mine.and_then(|b| b.time)
        } else {
            Some(w.time.clone())
        },
        subresource: w.subresource.clone(),
        set: applied,
    });
    write_entries(&mut merged, entries);
    Ok(merged)
}

#[cfg(test)]
mod tests {
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
}
