//! One watched kind, kept the way kube-runtime's reflector `Writer` keeps it
//! (`kube::runtime::reflector::store::Writer::apply_watcher_event`): objects listed
//! between `Init` and `InitDone` are buffered and swapped in whole at `InitDone`, so a
//! reader never sees half a list; `Apply` and `Delete` change the live snapshot; the
//! snapshot is ready from the first `InitDone` on and never stops being ready; a watch
//! that fails (and the watcher's backoff while it retries) leaves the last snapshot as
//! it was, and a re-list replaces it whole, so what was deleted meanwhile disappears.
//!
//! Written once for every watched kind. Not here: what a kind means. Each adapter
//! beside this file gives a key and a derive function and hands each published
//! snapshot to the plain-data module that uses it (the pod index, the policy store,
//! the API server's endpoint set).
//!
//! Not kube-runtime's own `Store`: it keeps whole objects under namespace/name and its
//! readiness can only be awaited. The callers keep derived values under their own key
//! (a pod's identity by UID, a compiled policy that outlives a bad edit, endpoint
//! addresses), ask "ready?" synchronously, and are told of each change.

use std::{collections::BTreeMap, fmt::Debug, pin::pin, sync::Arc};

use futures_util::{Stream, StreamExt};
use kube::{
    Api, Resource,
    runtime::{WatchStreamExt, watcher},
};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

/// What readers see of one watched kind.
#[derive(Debug)]
pub(crate) struct Snapshot<V> {
    /// The derived value of each object, by key: the last complete list, then every
    /// change since.
    pub objects: Arc<BTreeMap<String, V>>,
    /// Set by the first complete list and never cleared: a watch outage leaves
    /// `objects` stale, not unknown.
    pub ready: bool,
}

/// Computes the value kept for an object from the object and the value kept for its
/// key now (`None` for a new key); `None` keeps nothing for the key.
type Derive<K, V> = Box<dyn FnMut(&K, Option<&V>) -> Option<V> + Send>;

/// The writer of one kind's [`Snapshot`], fed one watcher event at a time.
pub(crate) struct Reflector<K, V> {
    key: fn(&K) -> Option<String>,
    derive: Derive<K, V>,
    live: Snapshot<V>,
    /// The list in progress, from `Init` to `InitDone`: never seen by readers.
    listing: BTreeMap<String, V>,
}

// === impl Snapshot ===

// By hand: the derives would require `V: Clone`/`V: Default`, which an `Arc` does not need.
impl<V> Clone for Snapshot<V> {
    fn clone(&self) -> Self {
        Self {
            objects: self.objects.clone(),
            ready: self.ready,
        }
    }
}

impl<V> Default for Snapshot<V> {
    fn default() -> Self {
        Self {
            objects: Arc::new(BTreeMap::new()),
            ready: false,
        }
    }
}

// === impl Reflector ===

impl<K, V: Clone> Reflector<K, V> {
    /// A reflector that keeps `derive(object, kept)` under `key(object)`; an object
    /// without a key is ignored. `kept` lets a derive function keep the last good value
    /// when an object changes into one it cannot use.
    pub(crate) fn new(
        key: fn(&K) -> Option<String>,
        derive: impl FnMut(&K, Option<&V>) -> Option<V> + Send + 'static,
    ) -> Self {
        Self {
            key,
            derive: Box::new(derive),
            live: Snapshot::default(),
            listing: BTreeMap::new(),
        }
    }

    /// What readers may see now.
    pub(crate) fn snapshot(&self) -> &Snapshot<V> {
        &self.live
    }

    /// Applies one event; true when the snapshot changed and should be published.
    pub(crate) fn apply(&mut self, event: watcher::Event<K>) -> bool {
        match event {
            watcher::Event::Init => {
                self.listing = BTreeMap::new();
                false
            }
            watcher::Event::InitApply(object) => {
                let Some(key) = (self.key)(&object) else {
                    return false;
                };
                // The live value, not a listed one: a re-list sees an object once, and
                // what it replaces is what readers have now.
                if let Some(value) = (self.derive)(&object, self.live.objects.get(&key)) {
                    self.listing.insert(key, value);
                }
                false
            }
            watcher::Event::InitDone => {
                self.live = Snapshot {
                    objects: Arc::new(std::mem::take(&mut self.listing)),
                    ready: true,
                };
                true
            }
            watcher::Event::Apply(object) => {
                let Some(key) = (self.key)(&object) else {
                    return false;
                };
                let value = (self.derive)(&object, self.live.objects.get(&key));
                // Copy on write: a snapshot a reader still holds stays as it was. One
                // map clone per change, small next to decoding the watch event.
                let objects = Arc::make_mut(&mut self.live.objects);
                match value {
                    Some(value) => objects.insert(key, value),
                    None => objects.remove(&key),
                };
                true
            }
            watcher::Event::Delete(object) => match (self.key)(&object) {
                Some(key) if self.live.objects.contains_key(&key) => {
                    Arc::make_mut(&mut self.live.objects).remove(&key);
                    true
                }
                _ => false,
            },
        }
    }
}

/// Watches `api` (kube-runtime's watcher with its default backoff) into `reflector`
/// for as long as the agent runs; `publish` gets every snapshot readers may see.
pub(crate) fn spawn<K, V>(
    what: &'static str,
    api: Api<K>,
    config: watcher::Config,
    reflector: Reflector<K, V>,
    publish: impl FnMut(&Snapshot<V>) + Send + 'static,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    let events = watcher(api, config).default_backoff();
    tokio::spawn(run(what, events, reflector, publish));
}

/// Feeds `events` into `reflector` until they end, publishing each change. A failed
/// watch is logged as `<what> watch failed` and changes nothing: the watcher retries
/// and starts again with a fresh list.
async fn run<K, V>(
    what: &str,
    events: impl Stream<Item = watcher::Result<watcher::Event<K>>>,
    mut reflector: Reflector<K, V>,
    mut publish: impl FnMut(&Snapshot<V>),
) where
    V: Clone,
{
    let mut events = pin!(events);
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                let was_ready = reflector.snapshot().ready;
                if reflector.apply(event) {
                    let snapshot = reflector.snapshot();
                    publish(snapshot);
                    if !was_ready && snapshot.ready {
                        info!(objects = snapshot.objects.len(), "{what} watch listed");
                    }
                }
            }
            Err(error) => {
                warn!(%error, "{what} watch failed; the last good state stays in force");
            }
        }
    }
}

#[cfg(test)]
mod tests;
