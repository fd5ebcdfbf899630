//! The API server's endpoints as plain data: the addresses the kernel must intercept
//! (every ClusterIP and port of the `kubernetes` Service, every endpoint address and
//! port of its EndpointSlices, plus the configured `targets`), and the ready
//! endpoints the agent itself dials.
//!
//! Interception covers every endpoint, ready or not: an API server that is starting or
//! draining still accepts connections, and a pod must not reach it directly meanwhile.
//! The agent's own upstream uses only the ready ones.
//!
//! Not here: watching the Service and its slices ([`crate::kube::endpoint_discovery`],
//! which keeps the last known addresses through a watch outage), the kernel map
//! ([`crate::ebpf`]) and dialing ([`crate::proxy::dial`]), which take what this module
//! computes.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kgate_common::TargetKind;

/// What discovery has found so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Discovered {
    /// ClusterIP:port of each Service port.
    pub service: Vec<SocketAddr>,
    /// Every endpoint address:port of the Service's slices.
    pub endpoints: Vec<Endpoint>,
    /// Both watches have listed at least once.
    pub synced: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// `conditions.ready`, which the API treats as true when unset.
    pub ready: bool,
}

// === impl Discovered ===

impl Discovered {
    /// The kernel's target set: what was discovered, then the configured extras (an
    /// address found both ways keeps its discovered kind).
    pub fn targets(&self, extra: &[SocketAddr]) -> Vec<(SocketAddr, TargetKind)> {
        let mut out: BTreeMap<SocketAddr, TargetKind> = BTreeMap::new();
        for addr in extra {
            out.insert(canonical(*addr), TargetKind::Extra);
        }
        for e in &self.endpoints {
            out.insert(canonical(e.addr), TargetKind::Endpoint);
        }
        for addr in &self.service {
            out.insert(canonical(*addr), TargetKind::ServiceIp);
        }
        out.into_iter().collect()
    }

    /// The endpoints the agent may dial.
    pub fn ready_endpoints(&self) -> Vec<SocketAddr> {
        self.endpoints
            .iter()
            .filter(|e| e.ready)
            .map(|e| e.addr)
            .collect()
    }
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// The Service's ClusterIPs × its TCP ports. A headless Service (`None`) has none.
pub(crate) fn service_addresses(service: &Service) -> Vec<SocketAddr> {
    let Some(spec) = &service.spec else {
        return Vec::new();
    };
    let ips: Vec<&String> = match (&spec.cluster_ips, &spec.cluster_ip) {
        (Some(ips), _) if !ips.is_empty() => ips.iter().collect(),
        (_, Some(ip)) => vec![ip],
        _ => Vec::new(),
    };
    let ports: Vec<u16> = spec
        .ports
        .iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().is_none_or(|p| p == "TCP"))
        .filter_map(|p| u16::try_from(p.port).ok())
        .collect();
    ips.iter()
        .filter_map(|ip| ip.parse::<IpAddr>().ok())
        .flat_map(|ip| ports.iter().map(move |port| SocketAddr::new(ip, *port)))
        .collect()
}

/// Every address × TCP port of a slice. FQDN slices name no address to intercept; a
/// port without a number means "all ports", which a connect hook cannot match, so it
/// is skipped (the Service's own slices always number theirs).
pub(crate) fn slice_endpoints(slice: &EndpointSlice) -> Vec<Endpoint> {
    if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
        return Vec::new();
    }
    let ports: Vec<u16> = slice
        .ports
        .iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().is_none_or(|p| p == "TCP"))
        .filter_map(|p| p.port.and_then(|p| u16::try_from(p).ok()))
        .collect();
    let mut out = Vec::new();
    for endpoint in &slice.endpoints {
        let ready = endpoint
            .conditions
            .as_ref()
            .and_then(|c| c.ready)
            .unwrap_or(true);
        for ip in endpoint
            .addresses
            .iter()
            .filter_map(|a| a.parse::<IpAddr>().ok())
        {
            out.extend(ports.iter().map(|port| Endpoint {
                addr: SocketAddr::new(ip, *port),
                ready,
            }));
        }
    }
    out
}

#[cfg(test)]
mod tests;
