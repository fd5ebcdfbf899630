//! The double's storage, etcd-like: one global resourceVersion counter, objects keyed
//! by resource, namespace and name, and a bounded event history that watches replay
//! from a resourceVersion (older than the history → 410 Gone, as the real server).

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Mutex,
};

use serde_json::{Value, json};
use tokio::sync::broadcast;

/// How many events a watch can resume from.
const HISTORY: usize = 10_000;

#[derive(Clone, Debug)]
pub(crate) struct Event {
    pub resource: &'static str,
    pub namespace: String,
    pub kind: &'static str, // ADDED | MODIFIED | DELETED
    pub object: Value,
    pub rv: u64,
}

type Key = (&'static str, String, String);

pub(crate) struct Store {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Event>,
}

struct Inner {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Event>,
    uid: u64,
}

pub(crate) enum StoreError {
    NotFound,
    AlreadyExists,
    Conflict,
}

impl Store {
    pub(crate) fn new() -> Self {
        let (events, _) = broadcast::channel(65_536);
        Self {
            inner: Mutex::new(Inner {
                rv: 1000,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                uid: 0,
            }),
            events,
        }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    pub(crate) fn current_rv(&self) -> u64 {
        self.inner.lock().unwrap().rv
    }

    pub(crate) fn get(&self, resource: &'static str, ns: &str, name: &str) -> Option<Value> {
        let inner = self.inner.lock().unwrap();
        inner
            .objects
            .get(&(resource, ns.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Objects of a resource (in a namespace, or all with `None`), by name, and the RV.
    pub(crate) fn list(&self, resource: &'static str, ns: Option<&str>) -> (Vec<Value>, u64) {
        let inner = self.inner.lock().unwrap();
        let items = inner
            .objects
            .iter()
            .filter(|((r, n, _), _)| *r == resource && ns.is_none_or(|ns| ns == n))
            .map(|(_, v)| v.clone())
            .collect();
        (items, inner.rv)
    }

    /// Events after `rv` for a resource, or `None` when `rv` is older than the history.
    pub(crate) fn events_since(&self, resource: &'static str, rv: u64) -> Option<Vec<Event>> {
        let inner = self.inner.lock().unwrap();
        if let Some(oldest) = inner.history.front()
            && rv + 1 < oldest.rv
        {
            return None;
        }
        Some(
            inner
                .history
                .iter()
                .filter(|e| e.resource == resource && e.rv > rv)
                .cloned()
                .collect(),
        )
    }

    pub(crate) fn create(
        &self,
        resource: &'static str,
        ns: &str,
        mut obj: Value,
    ) -> Result<Value, StoreError> {
        let mut inner = self.inner.lock().unwrap();
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let key = (resource, ns.to_owned(), name.clone());
        if inner.objects.contains_key(&key) {
            return Err(StoreError::AlreadyExists);
        }
        inner.rv += 1;
        inner.uid += 1;
        let (rv, uid) = (inner.rv, inner.uid);
        let meta = obj["metadata"]
            .as_object_mut()
            .expect("caller checked metadata");
        meta.insert(
            "uid".into(),
            json!(format!("00000000-0000-4000-8000-{uid:012x}")),
        );
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        meta.insert("creationTimestamp".into(), json!(now()));
        if !ns.is_empty() {
            meta.insert("namespace".into(), json!(ns));
        }
        inner.objects.insert(key, obj.clone());
        self.emit(&mut inner, resource, ns, "ADDED", &obj, rv);
        Ok(obj)
    }

    /// Replaces an object; `expected_rv` (when set) must match, as an optimistic lock.
    pub(crate) fn update(
        &self,
        resource: &'static str,
        ns: &str,
        mut obj: Value,
    ) -> Result<Value, StoreError> {
        let mut inner = self.inner.lock().unwrap();
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let key = (resource, ns.to_owned(), name.clone());
        let Some(old) = inner.objects.get(&key) else {
            return Err(StoreError::NotFound);
        };
        if let Some(rv) = obj["metadata"]["resourceVersion"].as_str()
            && !rv.is_empty()
            && Some(rv) != old["metadata"]["resourceVersion"].as_str()
        {
            return Err(StoreError::Conflict);
        }
        let (uid, created) = (
            old["metadata"]["uid"].clone(),
            old["metadata"]["creationTimestamp"].clone(),
        );
        let old_rv = old["metadata"]["resourceVersion"].clone();
        let meta = obj["metadata"]
            .as_object_mut()
            .expect("caller checked metadata");
        meta.insert("uid".into(), uid);
        meta.insert("creationTimestamp".into(), created);
        meta.insert("resourceVersion".into(), old_rv);
        if !ns.is_empty() {
            meta.insert("namespace".into(), json!(ns));
        }
        // An update that changes nothing is not written: no new resourceVersion, no
        // event (etcd3 store's GuaranteedUpdate compares the encoded bytes and returns
        // the stored object).
        if inner.objects.get(&key) == Some(&obj) {
            return Ok(obj);
        }
        inner.rv += 1;
        let rv = inner.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        inner.objects.insert(key, obj.clone());
        self.emit(&mut inner, resource, ns, "MODIFIED", &obj, rv);
        Ok(obj)
    }

    pub(crate) fn delete(
        &self,
        resource: &'static str,
        ns: &str,
        name: &str,
    ) -> Result<Value, StoreError> {
        let mut inner = self.inner.lock().unwrap();
        let mut obj = inner
            .objects
            .remove(&(resource, ns.to_owned(), name.to_owned()))
            .ok_or(StoreError::NotFound)?;
        inner.rv += 1;
        let rv = inner.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.emit(&mut inner, resource, ns, "DELETED", &obj, rv);
        Ok(obj)
    }

    fn emit(
        &self,
        inner: &mut Inner,
        resource: &'static str,
        ns: &str,
        kind: &'static str,
        obj: &Value,
        rv: u64,
    ) {
        let event = Event {
            resource,
            namespace: ns.to_owned(),
            kind,
            object: obj.clone(),
            rv,
        };
        if inner.history.len() == HISTORY {
            inner.history.pop_front();
        }
        inner.history.push_back(event.clone());
        let _ = self.events.send(event);
    }
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

/// RFC 3339 UTC, seconds precision, as metav1.Time.
pub(crate) fn now() -> String {
    rfc3339(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs(),
    )
}

/// Seconds since the epoch as metav1.Time.
pub(crate) fn rfc3339(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(i64::try_from(days).unwrap_or(0));
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (era * 400 + yoe + i64::from(m <= 2), m, d)
}

/// metav1.Time (`2006-01-02T15:04:05Z`, fractions ignored) to seconds since the epoch.
pub(crate) fn parse_rfc3339(s: &str) -> Option<u64> {
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Howard Hinnant's days_from_civil, the inverse of civil_from_days below.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + h * 3600 + min * 60 + sec).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_round_trip() {
        for secs in [0, 951_782_400, 1_700_000_000, 4_102_444_799] {
            assert_eq!(super::parse_rfc3339(&super::rfc3339(secs)), Some(secs));
        }
        assert_eq!(super::parse_rfc3339("nonsense"), None);
    }
}
