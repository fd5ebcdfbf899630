//! kgate: the node agent and admin CLI of a Kubernetes API policy gateway.
//!
//! The agent's request path is a fixed sequence of stages; see [`proxy`] for the order.
//! Plumbing sits beside the stages: [`config`], [`ebpf`] (the only module that talks to
//! aya), [`kube`] (the only module that talks to kube-runtime watches) and [`cgroup`]
//! (cgroup v2 paths and pod UIDs).

pub mod admin;
pub mod agent;
pub mod api_endpoints;
pub mod approval;
pub mod body;
pub mod cert;
pub mod cgroup;
pub mod cli;
pub mod config;
pub mod connection;
pub mod crds;
pub mod ebpf;
pub mod identity;
pub mod kube;
pub mod logging;
pub mod mask;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod record;
pub mod request_info;
pub mod status;
