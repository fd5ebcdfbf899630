//! `kgate policy explain`: which rule decides a hypothetical request, and why, from
//! the same evaluation the agent runs.

use std::collections::BTreeMap;

use super::{Caller, PolicySet};
use crate::{identity::UserInfo, request_info::RequestInfo};

/// A request described by its attributes, as on the command line.
#[derive(Clone, Debug, Default)]
pub(crate) struct Question {
    pub user: String,
    pub groups: Vec<String>,
    pub verb: String,
    /// `RESOURCE` or `RESOURCE/SUBRESOURCE`; empty with `non_resource_url`.
    pub resource: String,
    pub api_group: String,
    pub namespace: String,
    pub name: String,
    pub non_resource_url: Option<String>,
    pub pod_labels: BTreeMap<String, String>,
    pub container: Option<String>,
    pub process: Option<String>,
}

/// The decision and the reasoning, as text.
pub(crate) fn explain(set: &PolicySet, q: &Question) -> String {
    let mut groups = q.groups.clone();
    if let Some(ns) = q
        .user
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .map(|(ns, _)| ns)
    {
        groups.push("system:serviceaccounts".into());
        groups.push(format!("system:serviceaccounts:{ns}"));
    }
    groups.push("system:authenticated".into());
    let user = UserInfo {
        username: q.user.clone(),
        uid: String::new(),
        groups,
        extra: BTreeMap::new(),
    };
    let (resource, subresource) = q
        .resource
        .split_once('/')
        .map_or((q.resource.clone(), String::new()), |(r, s)| {
            (r.to_owned(), s.to_owned())
        });
    let info = RequestInfo {
        is_resource_request: q.non_resource_url.is_none(),
        path: q.non_resource_url.clone().unwrap_or_default(),
        verb: q.verb.as_str().into(),
        api_group: q.api_group.as_str().into(),
        namespace: q.namespace.as_str().into(),
        resource: resource.into(),
        subresource: subresource.into(),
        name: q.name.as_str().into(),
        ..RequestInfo::default()
    };
    let caller = Caller {
        user: Some(&user),
        pod_labels: (!q.pod_labels.is_empty()).then_some(&q.pod_labels),
        container: q.container.as_deref(),
        process: q.process.as_deref(),
    };
    let mut why = String::new();
    let decision = set.evaluate_explained(&caller, &info, Some(&mut why));
    let verdict = match decision.shadowed {
        Some(would) => format!("{:?} (shadow mode: would {would:?})", decision.action),
        None => format!("{:?}", decision.action),
    };
    let mut out = format!("{}: {verdict}\n", decision.source);
    if let Some(message) = &decision.message {
        out.push_str(&format!("message: {message}\n"));
    }
    out.push_str(&why);
    out
}
