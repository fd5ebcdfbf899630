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

mod fieldset;
mod structured;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde_json::{Value, json};

pub(crate) use self::fieldset::Set;
use self::structured::{compare, merge, remove_items};

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
