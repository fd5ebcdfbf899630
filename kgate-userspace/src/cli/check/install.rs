//! What `kubectl apply -k deploy/` puts in the cluster besides the agents: kgate's
//! CustomResourceDefinitions, at the versions this kgate reads and writes, and the
//! permissions of the agents' ServiceAccount, asked of the API server itself with a
//! SubjectAccessReview per thing an agent does (so that whatever grants them, RBAC
//! from deploy/rbac.yaml or another authorizer, is what is checked).
//!
//! Not here: impersonation, which only `identity.impersonate` needs (the rule in
//! deploy/rbac.yaml says so).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use serde_json::{Value, json};

use super::{
    cluster::brief,
    report::{Check, Report},
};

const GROUP: &str = "kgate install";

/// Every CRD of [`crate::crds::all`], installed and established at the same versions.
pub(super) async fn crds(client: &kube::Client, report: &mut Report) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for expected in crate::crds::all() {
        let name = expected.metadata.name.clone().unwrap_or_default();
        let check = match api.get_opt(&name).await {
            Ok(installed) => crd_check(&expected, installed.as_ref()),
            Err(error) => Check::fail(
                "crd",
                format!(
                    "cannot read CustomResourceDefinition {name}: {}",
                    brief(&error)
                ),
                "kgate check needs `get` on customresourcedefinitions.apiextensions.k8s.io",
            ),
        };
        report.add(GROUP, check);
    }
}

/// `installed` against `expected`: present, established, serving and storing the
/// same versions, with the same schemas.
pub(super) fn crd_check(
    expected: &CustomResourceDefinition,
    installed: Option<&CustomResourceDefinition>,
) -> Check {
    let name = expected.metadata.name.as_deref().unwrap_or_default();
    let apply = "install kgate's CRDs: `kgate crds | kubectl apply -f -` (or \
                 `kubectl apply -k deploy/`)";
    let Some(installed) = installed else {
        return Check::fail(
            "crd",
            format!("CustomResourceDefinition {name} is not installed"),
            format!("{apply}; without them agents load no policy and refuse every request"),
        );
    };
    let versions = |crd: &CustomResourceDefinition, pick: fn(bool, bool) -> bool| {
        crd.spec
            .versions
            .iter()
            .filter(|v| pick(v.served, v.storage))
            .map(|v| v.name.clone())
            .collect::<Vec<_>>()
    };
    let (want_served, want_storage) = (
        versions(expected, |served, _| served),
        versions(expected, |_, storage| storage),
    );
    let (served, storage) = (
        versions(installed, |served, _| served),
        versions(installed, |_, storage| storage),
    );
    let status = installed.status.clone().unwrap_or_default();
    let established = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Established" && c.status == "True");
    if !established {
        return Check::fail(
            "crd",
            format!("CustomResourceDefinition {name} is not Established"),
            format!(
                "`kubectl get crd {name} -o yaml` says why in its conditions (a name \
                 conflict?); the API server serves no {name} until it is"
            ),
        );
    }
    if let Some(missing) = want_served.iter().find(|v| !served.contains(v)) {
        return Check::fail(
            "crd",
            format!(
                "CustomResourceDefinition {name} does not serve {missing} (serves {})",
                served.join(", ")
            ),
            format!(
                "{apply}: this kgate reads and writes {}",
                want_served.join(", ")
            ),
        );
    }
    if storage != want_storage {
        return Check::fail(
            "crd",
            format!(
                "CustomResourceDefinition {name} stores {} where this kgate stores {}",
                storage.join(", "),
                want_storage.join(", ")
            ),
            apply,
        );
    }
    let schema = |crd: &CustomResourceDefinition| -> Vec<Value> {
        crd.spec
            .versions
            .iter()
            .map(|v| json!([v.name, v.schema]))
            .collect()
    };
    let stored = status.stored_versions.unwrap_or_default();
    let listed = format!(
        "CustomResourceDefinition {name}: serves {}, stores {}",
        served.join(", "),
        storage.join(", ")
    );
    if schema(installed) != schema(expected) {
        return Check::warn(
            "crd",
            format!("{listed}, with another schema than this kgate's"),
            format!("installed by another kgate version? {apply} with the kgate the agents run"),
        );
    }
    if let Some(old) = stored.iter().find(|v| !want_served.contains(v)) {
        return Check::warn(
            "crd",
            format!("{listed}; objects may still be stored as {old}"),
            "migrate the stored objects and drop the old version from status.storedVersions \
             (the Kubernetes docs' \"upgrade existing objects to a new stored version\")",
        );
    }
    Check::ok("crd", listed)
}

/// Where a permission applies.
#[derive(Clone, Copy, Debug)]
pub(super) enum Scope {
    Cluster,
    Namespace(&'static str),
    /// kgate's own namespace (`--namespace`).
    Kgate,
}

/// One thing an agent asks the API server to do: a verb on a resource (or, with a
/// `path`, on a non-resource URL).
#[derive(Clone, Copy, Debug)]
pub(super) struct Permission {
    pub verb: &'static str,
    pub group: &'static str,
    pub resource: &'static str,
    pub subresource: &'static str,
    pub scope: Scope,
    /// One object by name (RBAC's `resourceNames`); empty: any.
    pub name: &'static str,
    /// A non-resource URL instead of a resource.
    pub path: &'static str,
}

/// What the agent calls, module by module: the node's pod index (kube/pods.rs), token
/// and caller reviews (identity, admin), policies and their status (kube/policies.rs),
/// approvals (approval/), endpoint discovery of default/kubernetes
/// (kube/endpoint_discovery.rs), the heartbeat Lease (admin/heartbeat.rs), OIDC
/// discovery and the JWKS (identity). The unit tests check deploy/rbac.yaml grants each.
pub(super) const AGENT_PERMISSIONS: &[Permission] = &[
    Permission::on("list", "", "pods"),
    Permission::on("watch", "", "pods"),
    Permission::on("create", "authentication.k8s.io", "tokenreviews"),
    Permission::on("create", "authorization.k8s.io", "subjectaccessreviews"),
    Permission::on("list", "kgate.io", "kgatepolicies"),
    Permission::on("watch", "kgate.io", "kgatepolicies"),
    Permission::on("patch", "kgate.io", "kgatepolicies").sub("status"),
    Permission::on("create", "kgate.io", "kgateapprovals"),
    Permission::on("get", "kgate.io", "kgateapprovals"),
    Permission::on("list", "kgate.io", "kgateapprovals"),
    Permission::on("patch", "kgate.io", "kgateapprovals").sub("status"),
    Permission::on("list", "", "services")
        .at(Scope::Namespace("default"))
        .named("kubernetes"),
    Permission::on("watch", "", "services")
        .at(Scope::Namespace("default"))
        .named("kubernetes"),
    Permission::on("list", "discovery.k8s.io", "endpointslices").at(Scope::Namespace("default")),
    Permission::on("watch", "discovery.k8s.io", "endpointslices").at(Scope::Namespace("default")),
    Permission::on("create", "coordination.k8s.io", "leases").at(Scope::Kgate),
    Permission::on("patch", "coordination.k8s.io", "leases").at(Scope::Kgate),
    Permission::url("get", "/.well-known/openid-configuration"),
    Permission::url("get", "/openid/v1/jwks"),
];

// === impl Permission ===

impl Permission {
    /// `verb` on every `resource` of `group`, cluster-wide.
    const fn on(verb: &'static str, group: &'static str, resource: &'static str) -> Self {
        Self {
            verb,
            group,
            resource,
            subresource: "",
            scope: Scope::Cluster,
            name: "",
            path: "",
        }
    }

    const fn url(verb: &'static str, path: &'static str) -> Self {
        Self {
            path,
            ..Self::on(verb, "", "")
        }
    }

    const fn sub(self, subresource: &'static str) -> Self {
        Self {
            subresource,
            ..self
        }
    }

    const fn at(self, scope: Scope) -> Self {
        Self { scope, ..self }
    }

    const fn named(self, name: &'static str) -> Self {
        Self { name, ..self }
    }

    /// `create tokenreviews.authentication.k8s.io`, as kubectl names resources.
    pub(super) fn describe(&self, namespace: &str) -> String {
        if !self.path.is_empty() {
            return format!("{} {}", self.verb, self.path);
        }
        let mut out = format!("{} {}", self.verb, self.resource);
        if !self.subresource.is_empty() {
            out = format!("{out}/{}", self.subresource);
        }
        if !self.group.is_empty() {
            out = format!("{out}.{}", self.group);
        }
        if !self.name.is_empty() {
            out = format!("{out} {}", self.name);
        }
        match self.namespace(namespace) {
            "" => out,
            ns => format!("{out} in {ns}"),
        }
    }

    /// The namespace it applies in, with kgate's being `kgate`; empty: cluster-wide.
    pub(super) fn namespace<'a>(&self, kgate: &'a str) -> &'a str {
        match self.scope {
            Scope::Cluster => "",
            Scope::Namespace(ns) => ns,
            Scope::Kgate => kgate,
        }
    }

    /// The attributes of a SubjectAccessReview asking about it.
    fn attributes(&self, namespace: &str) -> Value {
        if !self.path.is_empty() {
            return json!({"nonResourceAttributes": {"verb": self.verb, "path": self.path}});
        }
        json!({"resourceAttributes": {
            "verb": self.verb, "group": self.group, "resource": self.resource,
            "subresource": self.subresource, "namespace": self.namespace(namespace),
            "name": self.name,
        }})
    }
}

/// Asks the API server, for each of [`AGENT_PERMISSIONS`], whether the agents'
/// ServiceAccount `namespace/service_account` may.
pub(super) async fn rbac(
    client: &kube::Client,
    namespace: &str,
    service_account: &str,
    report: &mut Report,
) {
    let user = format!("system:serviceaccount:{namespace}:{service_account}");
    // The groups the API server gives a service account's token.
    let groups = [
        "system:serviceaccounts".to_owned(),
        format!("system:serviceaccounts:{namespace}"),
        "system:authenticated".to_owned(),
    ];
    let mut refused = Vec::new();
    for permission in AGENT_PERMISSIONS {
        let mut spec = permission.attributes(namespace);
        spec["user"] = json!(user);
        spec["groups"] = json!(groups);
        let review = json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": spec,
        });
        let request = http::Request::post("/apis/authorization.k8s.io/v1/subjectaccessreviews")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&review).unwrap_or_default());
        let answer = match request {
            Ok(request) => client.request::<Value>(request).await,
            Err(error) => Err(kube::Error::HttpError(error)),
        };
        match answer {
            Ok(answer) if answer["status"]["allowed"] == true => {}
            Ok(_) => refused.push(permission.describe(namespace)),
            Err(error) => {
                report.add(
                    GROUP,
                    Check::warn(
                        "rbac.agent",
                        format!(
                            "cannot ask the API server what {user} may do: {}",
                            brief(&error)
                        ),
                        "kgate check needs `create` on \
                         subjectaccessreviews.authorization.k8s.io",
                    ),
                );
                return;
            }
        }
    }
    let check = if refused.is_empty() {
        Check::ok(
            "rbac.agent",
            format!(
                "{namespace}/{service_account} may do all {} things an agent does",
                AGENT_PERMISSIONS.len()
            ),
        )
    } else {
        Check::fail(
            "rbac.agent",
            format!(
                "{namespace}/{service_account} may not: {}",
                refused.join("; ")
            ),
            "apply the agent's ClusterRole, Role and bindings (deploy/rbac.yaml, part of \
             `kubectl apply -k deploy/`); with a custom namespace or ServiceAccount, bind \
             them to it",
        )
    };
    report.add(GROUP, check);
}
