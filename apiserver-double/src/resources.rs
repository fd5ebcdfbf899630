//! The resources the double serves and the discovery documents that describe them
//! (`/api`, `/api/v1`, `/apis`, `/apis/GROUP/VERSION`), shaped as the real server's.

use serde_json::{Value, json};

#[derive(Debug)]
pub(crate) struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    pub name: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short: &'static [&'static str],
    pub subresources: &'static [&'static str],
}

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

pub(crate) const RESOURCES: &[Resource] = &[
    // kgate's own custom resources, as if its CRDs were installed (deploy/crds.yaml).
    Resource {
        group: "kgate.io",
        version: "v1alpha1",
        name: "kgatepolicies",
        singular: "kgatepolicy",
        kind: "KgatePolicy",
        namespaced: false,
        short: &["kgp"],
        subresources: &["status"],
    },
    Resource {
        group: "kgate.io",
        version: "v1alpha1",
        name: "kgateapprovals",
        singular: "kgateapproval",
        kind: "KgateApproval",
        namespaced: false,
        short: &["kga"],
        subresources: &[],
    },
    Resource {
        group: "",
        version: "v1",
        name: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        short: &["ns"],
        subresources: &["status"],
    },
    Resource {
        group: "",
        version: "v1",
        name: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        short: &["po"],
        subresources: &["status", "log", "exec", "attach", "portforward"],
    },
    Resource {
        group: "",
        version: "v1",
        name: "secrets",
        singular: "secret",
        kind: "Secret",
        namespaced: true,
        short: &[],
        subresources: &[],
    },
    Resource {
        group: "",
        version: "v1",
        name: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        namespaced: true,
        short: &["cm"],
        subresources: &[],
    },
    Resource {
        group: "",
        version: "v1",
        name: "serviceaccounts",
        singular: "serviceaccount",
        kind: "ServiceAccount",
        namespaced: true,
        short: &["sa"],
        subresources: &["token"],
    },
    Resource {
        group: "",
        version: "v1",
        name: "services",
        singular: "service",
        kind: "Service",
        namespaced: true,
        short: &["svc"],
        subresources: &["status"],
    },
    Resource {
        group: "discovery.k8s.io",
        version: "v1",
        name: "endpointslices",
        singular: "endpointslice",
        kind: "EndpointSlice",
        namespaced: true,
        short: &[],
        subresources: &[],
    },
    Resource {
        group: "",
        version: "v1",
        name: "nodes",
        singular: "node",
        kind: "Node",
        namespaced: false,
        short: &["no"],
        subresources: &["status"],
    },
    Resource {
        group: "coordination.k8s.io",
        version: "v1",
        name: "leases",
        singular: "lease",
        kind: "Lease",
        namespaced: true,
        short: &[],
        subresources: &[],
    },
    Resource {
        group: "apps",
        version: "v1",
        name: "deployments",
        singular: "deployment",
        kind: "Deployment",
        namespaced: true,
        short: &["deploy"],
        subresources: &["status", "scale"],
    },
    Resource {
        group: "authentication.k8s.io",
        version: "v1",
        name: "tokenreviews",
        singular: "tokenreview",
        kind: "TokenReview",
        namespaced: false,
        short: &[],
        subresources: &[],
    },
    Resource {
        group: "authentication.k8s.io",
        version: "v1",
        name: "selfsubjectreviews",
        singular: "selfsubjectreview",
        kind: "SelfSubjectReview",
        namespaced: false,
        short: &[],
        subresources: &[],
    },
    Resource {
        group: "authorization.k8s.io",
        version: "v1",
        name: "selfsubjectaccessreviews",
        singular: "selfsubjectaccessreview",
        kind: "SelfSubjectAccessReview",
        namespaced: false,
        short: &[],
        subresources: &[],
    },
    Resource {
        group: "authorization.k8s.io",
        version: "v1",
        name: "subjectaccessreviews",
        singular: "subjectaccessreview",
        kind: "SubjectAccessReview",
        namespaced: false,
        short: &[],
        subresources: &[],
    },
    Resource {
        group: "authorization.k8s.io",
        version: "v1",
        name: "selfsubjectrulesreviews",
        singular: "selfsubjectrulesreview",
        kind: "SelfSubjectRulesReview",
        namespaced: false,
        short: &[],
        subresources: &[],
    },
    // CustomResourceDefinitions, admitted as the real server admits them (crd.rs).
    Resource {
        group: "apiextensions.k8s.io",
        version: "v1",
        name: "customresourcedefinitions",
        singular: "customresourcedefinition",
        kind: "CustomResourceDefinition",
        namespaced: false,
        short: &["crd", "crds"],
        subresources: &["status"],
    },
];

/// Reviews are create-only: a POST asks a question and the answer comes back.
pub(crate) fn is_review(name: &str) -> bool {
    name.ends_with("reviews")
}

pub(crate) fn find(group: &str, version: &str, name: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.name == name)
}

impl Resource {
    pub(crate) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// The Kubernetes release the double says it is (`/version`). The double behaves as
/// 1.32 throughout, except where a module says the version changes what it does
/// (CustomResourceDefinition admission, `crd.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerVersion {
    pub minor: u32,
    pub patch: u32,
}

impl ServerVersion {
    /// `1.MINOR.PATCH`.
    pub const fn new(minor: u32, patch: u32) -> Self {
        Self { minor, patch }
    }
}

impl Default for ServerVersion {
    fn default() -> Self {
        Self::new(32, 4)
    }
}

pub(crate) fn version(v: ServerVersion) -> Value {
    json!({
        "major": "1", "minor": v.minor.to_string(), "gitVersion": format!("v1.{}.{}-kgate-double", v.minor, v.patch),
        "gitCommit": "0000000", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.23",
        "compiler": "gc", "platform": "linux/amd64"
    })
}

pub(crate) fn api_versions() -> Value {
    json!({
        "kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "10.213.0.1:16443"}]
    })
}

pub(crate) fn api_groups() -> Value {
    let mut names: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        if !names.iter().any(|(g, _)| *g == r.group) {
            names.push((r.group, r.version));
        }
    }
    let groups: Vec<Value> = names
        .iter()
        .map(|(g, v)| {
            json!({
                "name": g,
                "versions": [{"groupVersion": format!("{g}/{v}"), "version": v}],
                "preferredVersion": {"groupVersion": format!("{g}/{v}"), "version": v}
            })
        })
        .collect();
    json!({
        "kind": "APIGroupList", "apiVersion": "v1",
        "groups": groups
    })
}

/// The APIResourceList of a group version, or `None` if the double does not serve it.
pub(crate) fn resource_list(group: &str, version: &str) -> Option<Value> {
    let members: Vec<&Resource> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    let first = members.first()?;
    let mut resources = Vec::new();
    for r in &members {
        let verbs: &[&str] = if is_review(r.name) {
            &["create"]
        } else {
            &VERBS
        };
        let mut resource = json!({
            "name": r.name, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
            "verbs": verbs, "shortNames": r.short, "storageVersionHash": "double",
        });
        // `kubectl get all` expands the "all" category from discovery.
        if matches!(r.name, "pods" | "deployments") {
            resource["categories"] = json!(["all"]);
        }
        resources.push(resource);
        for sub in r.subresources {
            let (kind, verbs): (&str, &[&str]) = match *sub {
                "scale" => ("Scale", &["get", "patch", "update"]),
                "log" => ("Pod", &["get"]),
                "exec" | "attach" | "portforward" => ("PodExecOptions", &["create", "get"]),
                "token" => ("TokenRequest", &["create"]),
                _ => (r.kind, &["get", "patch", "update"]),
            };
            resources.push(json!({
                "name": format!("{}/{sub}", r.name), "singularName": "", "namespaced": r.namespaced,
                "kind": kind, "verbs": verbs,
            }));
        }
    }
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": first.api_version(), "resources": resources}),
    )
}
