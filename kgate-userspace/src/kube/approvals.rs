//! `KgateApproval` objects watched for `kgate console`'s live Approvals page, with the
//! viewer's client (so RBAC decides what the viewer sees): every snapshot the
//! [`reflector`](super::reflector) publishes, and every failed watch (the viewer may
//! not list approvals), handed to the caller until it stops listening.
//!
//! Not here: deciding ([`crate::decisions`]), the page's event stream
//! ([`crate::console`]).

use std::{collections::BTreeMap, pin::pin, sync::Arc};

use futures_util::StreamExt as _;
use kube::{
    Api, ResourceExt as _,
    runtime::{WatchStreamExt as _, watcher},
};

use super::reflector::Reflector;
use crate::approval::types::KgateApproval;

/// What the watch tells its listener.
pub(crate) enum Update {
    /// Every approval the viewer may see, by name, after each change.
    Snapshot(Arc<BTreeMap<String, KgateApproval>>),
    /// The watch failed (it retries with backoff); the last snapshot is still the
    /// latest known.
    Failed(String),
}

/// Watches every approval with `client`, calling `publish` with each update, until
/// `publish` returns false (the listener went away).
pub(crate) async fn watch(client: kube::Client, mut publish: impl FnMut(Update) -> bool) {
    let api: Api<KgateApproval> = Api::all(client);
    let mut reflector = Reflector::new(
        |a: &KgateApproval| Some(a.name_any()),
        |a: &KgateApproval, _| Some(a.clone()),
    );
    let mut events = pin!(watcher(api, watcher::Config::default()).default_backoff());
    while let Some(event) = events.next().await {
        let update = match event {
            Ok(event) => {
                if !reflector.apply(event) {
                    continue;
                }
                Update::Snapshot(reflector.snapshot().objects.clone())
            }
            Err(error) => Update::Failed(error.to_string()),
        };
        if !publish(update) {
            return;
        }
    }
}
