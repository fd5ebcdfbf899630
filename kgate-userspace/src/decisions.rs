//! A human's side of approvals, with the caller's own kube client: the list of
//! `KgateApproval` objects and a decision on one of them (approve, optionally for a
//! grant window, or deny with a reason), recorded with the decider's username from a
//! SelfSubjectReview. RBAC on `kgateapprovals` decides who may decide. Shared by
//! `kgate approvals list`/`approve`/`deny` ([`crate::cli`]) and `kgate console`
//! ([`crate::console`]), so both record a decision the same way.
//!
//! Not here: holding requests and acting on the decision ([`crate::approval`]),
//! printing ([`crate::cli`]).

use http::Request;
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::{Value, json};

use crate::approval::{parse_duration, types::KgateApproval};

#[derive(Debug, thiserror::Error)]
pub(crate) enum DecideError {
    #[error("{0}")]
    Kube(#[from] kube::Error),
    #[error("--for {0:?}: a duration such as 90s, 10m or 2h (at most 7 days)")]
    BadDuration(String),
    #[error("approval {name} is {phase}: only a pending request can be decided")]
    NotPending { name: String, phase: String },
}

/// What a human decided about a held request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict<'a> {
    /// Approve; with a window, repeats of the same user, verb and resource pass for it.
    Approve {
        grant_for: Option<&'a str>,
    },
    Deny,
}

/// A decision made: by whom.
#[derive(Clone, Debug)]
pub(crate) struct Decided {
    pub by: String,
}

/// Every approval, oldest first.
pub(crate) async fn list(client: kube::Client) -> Result<Vec<KgateApproval>, DecideError> {
    let api: Api<KgateApproval> = Api::all(client);
    let mut items = api.list(&ListParams::default()).await?.items;
    sort_oldest_first(&mut items);
    Ok(items)
}

/// Oldest first, by creation time.
pub(crate) fn sort_oldest_first(items: &mut [KgateApproval]) {
    items.sort_by(|a, b| {
        a.metadata
            .creation_timestamp
            .cmp(&b.metadata.creation_timestamp)
    });
}

/// Decides the pending approval `name` as the client's user.
///
/// # Errors
///
/// A bad grant window, an approval that is no longer pending, or the API server's
/// refusal (not found, forbidden by RBAC).
pub(crate) async fn decide(
    client: kube::Client,
    name: &str,
    verdict: Verdict<'_>,
    reason: Option<&str>,
) -> Result<Decided, DecideError> {
    let grant_for = match verdict {
        Verdict::Approve { grant_for } => grant_for,
        Verdict::Deny => None,
    };
    if let Some(window) = grant_for
        && parse_duration(window).is_none()
    {
        return Err(DecideError::BadDuration(window.to_owned()));
    }
    let by = whoami(&client).await.unwrap_or_else(|| "unknown".into());
    let api: Api<KgateApproval> = Api::all(client);
    let current = api.get(name).await?;
    let phase = current
        .status
        .as_ref()
        .map_or("Pending", |s| s.phase.as_str());
    if phase != "Pending" {
        return Err(DecideError::NotPending {
            name: name.to_owned(),
            phase: phase.to_owned(),
        });
    }
    let patch = json!({"spec": {
        "decision": if matches!(verdict, Verdict::Approve { .. }) { "approve" } else { "deny" },
        "grantFor": grant_for,
        "reason": reason,
        "decidedBy": by,
    }});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(Decided { by })
}

/// The client's username, from a SelfSubjectReview.
pub(crate) async fn whoami(client: &kube::Client) -> Option<String> {
    self_subject(client)
        .await
        .ok()?
        .get("username")?
        .as_str()
        .map(str::to_owned)
}

/// The client's `userInfo` from a SelfSubjectReview: an error when the API server
/// does not accept the client's credentials.
pub(crate) async fn self_subject(client: &kube::Client) -> Result<Value, kube::Error> {
    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    let req = Request::post("/apis/authentication.k8s.io/v1/selfsubjectreviews")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&body).unwrap_or_default())
        .map_err(kube::Error::HttpError)?;
    let review: Value = client.request(req).await?;
    Ok(review["status"]["userInfo"].clone())
}
