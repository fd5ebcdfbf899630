//! The policy in force: compiled once per change, swapped atomically, read per
//! request without locks held across awaits. A source that fails to load never
//! replaces the last good policy; the failure is logged with its location.
//!
//! Sources: policy files (re-read when they change). The `KgatePolicy` objects of the
//! cluster come in through [`PolicyStore::set_cluster`].

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use tracing::{info, warn};

use super::{PolicySet, compile::CompiledPolicy, file, types::DefaultAction};

pub(crate) struct PolicyStore {
    current: RwLock<Arc<PolicySet>>,
    /// False until the cluster's policies have been listed once (when watched).
    cluster_synced: AtomicBool,
    sources: Mutex<Sources>,
    default_action: DefaultAction,
    shadow: bool,
}

#[derive(Default)]
struct Sources {
    /// The last good policies of each file.
    files: BTreeMap<PathBuf, (Option<SystemTime>, Vec<Arc<CompiledPolicy>>)>,
    /// The last good version of each cluster policy object.
    cluster: BTreeMap<String, Arc<CompiledPolicy>>,
    generation: u64,
}

// === impl PolicyStore ===

impl PolicyStore {
    /// Loads `files` now: at start-up a bad file is an error, not a warning.
    /// With `cluster`, the store is not ready until [`PolicyStore::set_cluster_synced`].
    pub(crate) fn new(
        files: &[PathBuf],
        default_action: DefaultAction,
        shadow: bool,
        cluster: bool,
    ) -> Result<Self, file::FileError> {
        let mut sources = Sources::default();
        for path in files {
            let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
            let policies = file::load(path)?.into_iter().map(Arc::new).collect();
            sources.files.insert(path.clone(), (mtime, policies));
        }
        let store = Self {
            current: RwLock::new(Arc::new(PolicySet::new(
                Vec::new(),
                default_action,
                shadow,
                0,
            ))),
            cluster_synced: AtomicBool::new(!cluster),
            sources: Mutex::new(sources),
            default_action,
            shadow,
        };
        store.rebuild();
        Ok(store)
    }

    /// The policy in force.
    pub(crate) fn current(&self) -> Arc<PolicySet> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Re-reads the files that changed; keeps the last good version of a bad one.
    pub(crate) fn reload_files(&self) {
        let mut changed = false;
        {
            let mut sources = self.lock();
            for (path, (mtime, policies)) in &mut sources.files {
                let now = std::fs::metadata(path).and_then(|m| m.modified()).ok();
                if now == *mtime {
                    continue;
                }
                *mtime = now;
                match file::load(path) {
                    Ok(fresh) => {
                        info!(file = %path.display(), policies = fresh.len(), "policy file reloaded");
                        *policies = fresh.into_iter().map(Arc::new).collect();
                        changed = true;
                    }
                    Err(error) => {
                        warn!(%error, "policy file rejected; the previous version stays in force");
                    }
                }
            }
        }
        if changed {
            self.rebuild();
        }
    }

    /// Checks the files every `period`, for as long as the agent runs.
    pub(crate) fn spawn_file_reloader(self: &Arc<Self>, period: Duration) {
        let store = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                let Some(store) = store.upgrade() else {
                    return;
                };
                store.reload_files();
            }
        });
    }

    /// Whether every policy source has loaded once: before that, requests are refused
    /// (503) rather than judged by a partial policy.
    pub(crate) fn ready(&self) -> bool {
        self.cluster_synced.load(Ordering::Acquire)
    }

    pub(crate) fn set_cluster_synced(&self) {
        if !self.cluster_synced.swap(true, Ordering::AcqRel) {
            info!("cluster policies loaded");
        }
    }

    /// Sets the cluster's policies, each object's last good version by name (the
    /// policy watch, [`crate::kube::policies`], calls it with each snapshot). The same
    /// policies again change nothing, so the generation counts real changes.
    pub(crate) fn set_cluster(&self, policies: &BTreeMap<String, Arc<CompiledPolicy>>) {
        {
            let mut sources = self.lock();
            let unchanged = sources.cluster.len() == policies.len()
                && sources
                    .cluster
                    .iter()
                    .zip(policies)
                    .all(|((a, p), (b, q))| a == b && Arc::ptr_eq(p, q));
            if unchanged {
                return;
            }
            sources.cluster.clone_from(policies);
        }
        self.rebuild();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sources> {
        self.sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn rebuild(&self) {
        let mut sources = self.lock();
        sources.generation += 1;
        let policies: Vec<Arc<CompiledPolicy>> = sources
            .files
            .values()
            .flat_map(|(_, p)| p.iter().cloned())
            .chain(sources.cluster.values().cloned())
            .collect();
        let set = PolicySet::new(
            policies,
            self.default_action,
            self.shadow,
            sources.generation,
        );
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(set);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{compile::compile, types::KgatePolicySpec};

    fn policy(name: &str) -> Arc<CompiledPolicy> {
        let spec: KgatePolicySpec = serde_yaml::from_str(
            "subjects: {serviceAccounts: [\"ci/*\"]}\n\
             rules: [{name: read, match: {verbs: [get]}, action: allow}]",
        )
        .unwrap();
        Arc::new(compile(name, &spec).unwrap())
    }

    #[test]
    fn cluster_policies_are_in_force_as_set_and_ready_once_listed() {
        let store = PolicyStore::new(&[], DefaultAction::Deny, false, true).unwrap();
        assert!(
            !store.ready(),
            "ready before the cluster's policies were listed"
        );
        let (a, b) = (policy("a"), policy("b"));
        let both = BTreeMap::from([("a".to_owned(), a.clone()), ("b".to_owned(), b)]);
        store.set_cluster(&both);
        let generation = store.current().generation;
        assert_eq!(store.current().policies.len(), 2);
        store.set_cluster(&both.clone());
        assert_eq!(
            store.current().generation,
            generation,
            "the same policies again are no change"
        );
        store.set_cluster(&BTreeMap::from([("a".to_owned(), a)]));
        assert_eq!(store.current().policies.len(), 1, "a dropped policy goes");
        assert!(store.current().generation > generation);
        store.set_cluster_synced();
        assert!(store.ready());
    }
}
