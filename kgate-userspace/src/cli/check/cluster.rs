//! What the cluster must offer before kgate is installed: an API server of a release
//! kgate supports, the `kubernetes` Service and the EndpointSlices that list the API
//! server's addresses (what the kernel programs intercept), and the service-account
//! issuer's OIDC discovery and JWKS (what agents verify pods' tokens with).
//!
//! Not here: kgate's own objects ([`super::install`]) and nodes ([`super::nodes`]).

use std::net::{IpAddr, SocketAddr};

use jsonwebtoken::jwk::JwkSet;
use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{Api, api::ListParams};
use serde_json::Value;

use super::report::{Check, Report};
use crate::identity::{JWKS_PATH, OPENID_CONFIG_PATH, jwt::Keys};

const API: &str = "API server";
const SERVICE: &str = "kubernetes Service";
const ISSUER: &str = "service-account issuer";

/// The oldest minor release kgate supports (README: SelfSubjectReview is GA in 1.28).
pub(super) const MIN_MINOR: u32 = 28;

/// What the node checks compare agents with: the Service's addresses.
#[derive(Debug, Default)]
pub(super) struct ServiceFacts {
    pub cluster_ips: Vec<IpAddr>,
    pub port: Option<u16>,
}

/// The API server answers and is recent enough; `false` when it does not answer, as
/// nothing else can be checked then.
pub(super) async fn api_server(client: &kube::Client, url: &str, report: &mut Report) -> bool {
    let info = match client.apiserver_version().await {
        Ok(info) => info,
        Err(error) => {
            report.add(
                API,
                Check::fail(
                    "api.reachable",
                    format!("{url} does not answer: {}", brief(&error)),
                    "check the kubeconfig's current context and credentials \
                     (`kubectl config current-context`, `kubectl version`)",
                ),
            );
            return false;
        }
    };
    report.add(
        API,
        Check::ok(
            "api.reachable",
            format!("{url} answers as Kubernetes {}", info.git_version),
        ),
    );
    report.add(API, version(&info.major, &info.minor));
    true
}

/// The release against [`MIN_MINOR`]. Managed clusters write the minor as `28+`.
pub(super) fn version(major: &str, minor: &str) -> Check {
    let number = |s: &str| {
        s.trim_end_matches(|c: char| !c.is_ascii_digit())
            .parse::<u32>()
            .ok()
    };
    match (number(major), number(minor)) {
        (Some(1), Some(minor)) if minor >= MIN_MINOR => Check::ok(
            "api.version",
            format!("version 1.{minor} is supported (1.{MIN_MINOR} or later)"),
        ),
        (Some(1), Some(minor)) => Check::fail(
            "api.version",
            format!("version 1.{minor} is older than kgate supports (1.{MIN_MINOR} or later)"),
            "upgrade the control plane: the kgate CLI learns who the admin is from a \
             SelfSubjectReview, GA in 1.28",
        ),
        _ => Check::warn(
            "api.version",
            format!("cannot read the version {major:?}.{minor:?}"),
            "kgate supports Kubernetes 1.28 and later; check `kubectl version`",
        ),
    }
}

/// The `kubernetes` Service in `default` and the EndpointSlices that list the API
/// server's own addresses.
pub(super) async fn kubernetes_service(client: &kube::Client, report: &mut Report) -> ServiceFacts {
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let mut facts = ServiceFacts::default();
    match services.get_opt("kubernetes").await {
        Ok(Some(service)) => {
            let spec = service.spec.unwrap_or_default();
            facts.cluster_ips = spec
                .cluster_ips
                .unwrap_or_default()
                .iter()
                .chain(spec.cluster_ip.iter())
                .filter_map(|ip| ip.parse().ok())
                .fold(Vec::new(), |mut ips, ip| {
                    if !ips.contains(&ip) {
                        ips.push(ip);
                    }
                    ips
                });
            facts.port = spec
                .ports
                .unwrap_or_default()
                .iter()
                .find(|p| p.name.as_deref() == Some("https"))
                .and_then(|p| u16::try_from(p.port).ok());
            report.add(SERVICE, service_check(&facts));
        }
        Ok(None) => report.add(
            SERVICE,
            Check::fail(
                "service.kubernetes",
                "default/kubernetes does not exist",
                "the API server creates this Service itself; kgate intercepts its ClusterIP. \
                 Is this a Kubernetes API server?",
            ),
        ),
        Err(error) => report.add(
            SERVICE,
            Check::fail(
                "service.kubernetes",
                format!("cannot read default/kubernetes: {}", brief(&error)),
                "kgate check needs `get` on services in namespace default",
            ),
        ),
    }
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let listed = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=kubernetes"))
        .await;
    report.add(
        SERVICE,
        match listed {
            Ok(list) => endpoints_check(&list.items),
            Err(error) => Check::fail(
                "service.endpoints",
                format!(
                    "cannot list the EndpointSlices of default/kubernetes: {}",
                    brief(&error)
                ),
                "kgate check needs `list` on endpointslices.discovery.k8s.io in namespace default",
            ),
        },
    );
    facts
}

fn service_check(facts: &ServiceFacts) -> Check {
    let ips = join(&facts.cluster_ips);
    match (facts.cluster_ips.is_empty(), facts.port) {
        (false, Some(port)) => Check::ok(
            "service.kubernetes",
            format!("default/kubernetes: ClusterIP {ips}, port {port}"),
        ),
        _ => Check::fail(
            "service.kubernetes",
            format!("default/kubernetes has no ClusterIP or no `https` port (ClusterIPs: {ips:?})"),
            "kgate intercepts the Service's ClusterIP and port: the API server keeps them \
             (--service-cluster-ip-range); do not edit this Service",
        ),
    }
}

/// The ready endpoints of the slices (`ready` unset counts as ready, as the
/// EndpointSlice API says).
pub(super) fn endpoints_check(slices: &[EndpointSlice]) -> Check {
    let mut ready: Vec<SocketAddr> = Vec::new();
    for slice in slices {
        let ports: Vec<u16> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| p.port.and_then(|p| u16::try_from(p).ok()))
            .collect();
        for endpoint in &slice.endpoints {
            let is_ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            for ip in endpoint.addresses.iter().filter_map(|a| a.parse().ok()) {
                ready.extend(
                    ports
                        .iter()
                        .filter(|_| is_ready)
                        .map(|port| SocketAddr::new(ip, *port)),
                );
            }
        }
    }
    if ready.is_empty() {
        return Check::fail(
            "service.endpoints",
            format!(
                "no ready API server endpoint in {} EndpointSlice(s) of default/kubernetes",
                slices.len()
            ),
            "the API server publishes its own address there (--advertise-address, \
             --endpoint-reconciler-type=lease); agents intercept and forward to these addresses",
        );
    }
    Check::ok(
        "service.endpoints",
        format!(
            "EndpointSlices list {} ready endpoint(s): {}",
            ready.len(),
            join(&ready)
        ),
    )
}

/// OIDC discovery and the JWKS, read from the API server as the agents read them.
pub(super) async fn issuer(client: &kube::Client, report: &mut Report) {
    let discovery = get_json(client, OPENID_CONFIG_PATH).await;
    let issuer = match &discovery {
        Ok(doc) => {
            let issuer = doc["issuer"].as_str().unwrap_or_default().to_owned();
            report.add(
                ISSUER,
                Check::ok(
                    "issuer.discovery",
                    format!(
                        "{OPENID_CONFIG_PATH}: issuer {issuer}, jwks_uri {}",
                        doc["jwks_uri"].as_str().unwrap_or("none")
                    ),
                ),
            );
            issuer
        }
        Err(error) => {
            report.add(
                ISSUER,
                Check::warn(
                    "issuer.discovery",
                    format!("{OPENID_CONFIG_PATH} is not served: {error}"),
                    "kube-apiserver serves it when --service-account-issuer is an https URL; \
                     without it agents cannot verify tokens locally and send every new \
                     token to a TokenReview (slower, more load on the API server)",
                ),
            );
            String::new()
        }
    };
    let check = match get_json(client, JWKS_PATH).await {
        Ok(jwks) => jwks_check(&issuer, &jwks),
        Err(error) => Check::warn(
            "issuer.jwks",
            format!("the JWKS at {JWKS_PATH} is unreachable: {error}"),
            "agents fetch the service-account signing keys from the API server at \
             /openid/v1/jwks to verify tokens locally; without them every new token costs \
             a TokenReview. Make sure that path reaches kube-apiserver (a proxy or load \
             balancer in front may pass only /api and /apis) and that \
             --service-account-issuer is an https URL",
        ),
    };
    report.add(ISSUER, check);
}

/// The keys agents can use: those of the types and algorithms the API server signs with.
pub(super) fn jwks_check(issuer: &str, jwks: &Value) -> Check {
    let hint = "agents verify tokens with these keys; the API server publishes the \
                public halves of --service-account-key-file there";
    let set: JwkSet = match serde_json::from_value(jwks.clone()) {
        Ok(set) => set,
        Err(error) => {
            return Check::warn(
                "issuer.jwks",
                format!("{JWKS_PATH} is not a JWKS: {error}"),
                hint,
            );
        }
    };
    let usable = Keys::new(issuer.to_owned(), &set).count();
    if usable == 0 {
        return Check::warn(
            "issuer.jwks",
            format!(
                "{JWKS_PATH} holds {} key(s), none agents can verify with",
                set.keys.len()
            ),
            hint,
        );
    }
    Check::ok(
        "issuer.jwks",
        format!("{JWKS_PATH}: {usable} signing key(s) agents can verify with"),
    )
}

async fn get_json(client: &kube::Client, path: &str) -> Result<Value, String> {
    let request = http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    let text = client.request_text(request).await.map_err(|e| brief(&e))?;
    serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))
}

/// A kube error in one line: an API server's Status by its code and message (kube's
/// own text repeats the whole Status in Rust's debug form).
pub(super) fn brief(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!("{} {}", status.code, status.message),
        other => other.to_string(),
    }
}

pub(super) fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
