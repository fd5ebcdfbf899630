//! `KgatePolicy` objects, watched live (kube-rs watcher). Each object is compiled on
//! its own: a bad one is reported on its status and in the log, and its last good
//! version (or nothing, if it never had one) stays in force; the other policies are
//! not affected. Objects are read untyped so that one that does not even parse
//! cannot stop the watch.

use std::{collections::HashSet, sync::Arc};

use futures_util::StreamExt;
use kube::{
    Api, ResourceExt,
    api::{ApiResource, DynamicObject, Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;
use tracing::{info, warn};

use super::{
    compile,
    store::PolicyStore,
    types::{KgatePolicy, KgatePolicySpec},
};

/// Watches every `KgatePolicy` into `store` for as long as the agent runs.
pub fn spawn(client: kube::Client, store: Arc<PolicyStore>) {
    let resource = ApiResource::erase::<KgatePolicy>(&());
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    tokio::spawn(async move {
        let mut events = watcher(api.clone(), watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut listing: Option<HashSet<String>> = None;
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Init) => listing = Some(HashSet::new()),
                Ok(watcher::Event::InitApply(obj)) => {
                    if let Some(seen) = listing.as_mut() {
                        seen.insert(obj.name_any());
                    }
                    apply(&api, &store, &obj).await;
                }
                Ok(watcher::Event::InitDone) => {
                    let seen = listing.take().unwrap_or_default();
                    store.retain_cluster(&seen);
                    store.set_cluster_synced();
                }
                Ok(watcher::Event::Apply(obj)) => apply(&api, &store, &obj).await,
                Ok(watcher::Event::Delete(obj)) => {
                    info!(policy = obj.name_any(), "policy deleted");
                    store.replace_cluster(&obj.name_any(), None);
                }
                Err(error) => {
                    warn!(%error, "policy watch failed; the last good policies stay in force");
                }
            }
        }
    });
}

async fn apply(api: &Api<DynamicObject>, store: &PolicyStore, obj: &DynamicObject) {
    let name = obj.name_any();
    let compiled = serde_json::from_value::<KgatePolicySpec>(obj.data["spec"].clone())
        .map_err(|e| format!("policy {name:?}: spec: {e}"))
        .and_then(|spec| compile::compile(&name, &spec).map_err(|e| e.to_string()));
    let status = match compiled {
        Ok(policy) => {
            info!(policy = name, "policy loaded");
            store.replace_cluster(&name, Some(policy));
            json!({"status": {"valid": "True", "error": null, "observedGeneration": obj.metadata.generation}})
        }
        Err(error) => {
            warn!(%error, "policy rejected; its previous version stays in force");
            json!({"status": {"valid": "False", "error": error, "observedGeneration": obj.metadata.generation}})
        }
    };
    if let Err(error) = api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
    {
        warn!(%error, policy = name, "cannot report the policy's status");
    }
}
