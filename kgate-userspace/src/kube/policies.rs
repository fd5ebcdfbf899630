//! `KgatePolicy` objects, watched live into the policy store. Each object is compiled
//! on its own: a bad one is reported on its status and in the log, and its last good
//! version (or nothing, if it never had one) stays in force; the other policies are
//! not affected. Objects are read untyped so that one that does not even parse
//! cannot stop the watch.
//!
//! Not here: compiling ([`crate::policy::compile`]), combining the cluster's policies
//! with the files' and evaluating them ([`crate::policy::store`]).

use std::{collections::BTreeMap, sync::Arc};

use kube::{
    Api, ResourceExt,
    api::{ApiResource, DynamicObject, Patch, PatchParams},
    runtime::watcher,
};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::reflector::{self, Reflector};
use crate::policy::{
    compile::{self, CompiledPolicy},
    store::PolicyStore,
    types::{KgatePolicy, KgatePolicySpec},
};

/// A policy's `status`, to be written to the object named.
type Report = (String, serde_json::Value);

/// Watches every `KgatePolicy` into `store` for as long as the agent runs.
pub(crate) fn spawn(client: kube::Client, store: Arc<PolicyStore>) {
    let resource = ApiResource::erase::<KgatePolicy>(&());
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    // Reported from their own task: a slow status write never holds up the watch.
    let (reports, pending) = mpsc::unbounded_channel();
    tokio::spawn(report_statuses(api.clone(), pending));
    let reflector = Reflector::new(
        |obj: &DynamicObject| Some(obj.name_any()),
        move |obj, kept| compile(obj, kept, &reports),
    );
    let mut in_force = Arc::new(BTreeMap::new());
    reflector::spawn(
        "policy",
        api,
        watcher::Config::default(),
        reflector,
        move |snapshot| {
            store.set_cluster(&snapshot.objects);
            // After the store: a log line that says a policy is in force is true.
            log_changes(&in_force, &snapshot.objects);
            in_force = snapshot.objects.clone();
            if snapshot.ready {
                store.set_cluster_synced();
            }
        },
    );
}

/// The policy `obj` puts in force: its compiled spec, or when that fails the version
/// `kept` now (or none). Either way its status is reported.
fn compile(
    obj: &DynamicObject,
    kept: Option<&Arc<CompiledPolicy>>,
    reports: &mpsc::UnboundedSender<Report>,
) -> Option<Arc<CompiledPolicy>> {
    let name = obj.name_any();
    let compiled = serde_json::from_value::<KgatePolicySpec>(obj.data["spec"].clone())
        .map_err(|e| format!("policy {name:?}: spec: {e}"))
        .and_then(|spec| compile::compile(&name, &spec).map_err(|e| e.to_string()));
    let generation = obj.metadata.generation;
    let (status, in_force) = match compiled {
        Ok(policy) => (
            json!({"status": {"valid": "True", "error": null, "observedGeneration": generation}}),
            Some(Arc::new(policy)),
        ),
        Err(error) => {
            warn!(%error, "policy rejected; its previous version stays in force");
            (
                json!({"status": {"valid": "False", "error": error, "observedGeneration": generation}}),
                kept.cloned(),
            )
        }
    };
    // The receiver lives as long as the agent.
    let _ = reports.send((name, status));
    in_force
}

fn log_changes(
    before: &BTreeMap<String, Arc<CompiledPolicy>>,
    after: &BTreeMap<String, Arc<CompiledPolicy>>,
) {
    for (name, policy) in after {
        if before.get(name).is_none_or(|old| !Arc::ptr_eq(old, policy)) {
            info!(policy = name, "policy loaded");
        }
    }
    for name in before.keys().filter(|name| !after.contains_key(*name)) {
        info!(policy = name, "policy deleted");
    }
}

async fn report_statuses(api: Api<DynamicObject>, mut pending: mpsc::UnboundedReceiver<Report>) {
    while let Some((name, status)) = pending.recv().await {
        if let Err(error) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
        {
            warn!(%error, policy = name, "cannot report the policy's status");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(verbs: &str) -> DynamicObject {
        let resource = ApiResource::erase::<KgatePolicy>(&());
        let spec: serde_json::Value = serde_yaml::from_str(&format!(
            "subjects: {{serviceAccounts: [\"ci/*\"]}}\n\
             rules: [{{name: read, match: {{verbs: {verbs}}}, action: allow}}]"
        ))
        .unwrap();
        let mut obj = DynamicObject::new("bots", &resource).data(json!({ "spec": spec }));
        obj.metadata.generation = Some(3);
        obj
    }

    #[test]
    fn a_policy_that_does_not_compile_keeps_its_last_good_version_and_says_why() {
        let (reports, mut pending) = mpsc::unbounded_channel();
        let good = compile(&object("[get]"), None, &reports).expect("compiles");
        let (name, status) = pending.try_recv().unwrap();
        assert_eq!(name, "bots");
        assert_eq!(status["status"]["valid"], "True", "{status}");
        assert_eq!(status["status"]["observedGeneration"], 3, "{status}");

        let cases = [
            ("a bad edit of a good policy", Some(&good), Some(&good)),
            ("a policy never good", None, None),
        ];
        for (name, kept, want) in cases {
            let got = compile(&object("[get, lst]"), kept, &reports);
            assert_eq!(
                got.as_ref().map(Arc::as_ptr),
                want.map(Arc::as_ptr),
                "{name}"
            );
            let (_, status) = pending.try_recv().unwrap();
            assert_eq!(status["status"]["valid"], "False", "{name}: {status}");
            let error = status["status"]["error"].as_str().unwrap();
            assert!(error.contains("unknown verb \"lst\""), "{name}: {error}");
        }
    }
}
