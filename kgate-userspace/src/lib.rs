//! kgate: the node agent and admin CLI of a Kubernetes API policy gateway.
//!
//! The agent's request path is a fixed sequence of stages (`proxy`, with the order in
//! docs/architecture.md). Plumbing sits beside the stages: [`config`], `ebpf` (the only
//! module that talks to aya), `kube` (the only module that talks to kube-runtime
//! watches) and `cgroup` (cgroup v2 paths and pod UIDs).
//!
//! Modules are crate-private unless another crate uses them (`unreachable_pub` is on,
//! so rustc reports dead code): [`config`], [`crds`], [`mask`], [`request_info`],
//! [`record`]'s reading side, and [`cli`] and [`logging`] for `main.rs`. The tests
//! crate and the fuzz targets reach a few more pieces through the hidden `internal`.

// The docs are for the agent's developers (built with `--document-private-items`), so a
// public module's docs may link to the private modules it works with.
#![allow(rustdoc::private_intra_doc_links)]

mod admin;
mod agent;
mod api_endpoints;
mod api_status;
mod approval;
mod body;
mod cert;
mod cgroup;
pub mod cli;
mod cluster_sessions;
pub mod config;
mod connection;
mod console;
pub mod crds;
mod decisions;
mod ebpf;
mod identity;
mod kube;
pub mod logging;
pub mod mask;
mod metrics;
mod nodes;
mod policy;
mod proxy;
pub mod record;
pub mod request_info;

/// What the tests crate and the fuzz targets drive below the public modules (rustls
/// keeps an `internal` module for its fuzzers): the token verifier, the pod index and
/// the kube watches. Not an API; it changes with the agent.
#[doc(hidden)]
pub mod internal {
    /// The kube watches, started against any API server.
    pub mod kube {
        pub use crate::kube::{endpoint_discovery, pods};
    }
    /// Token verification and the pod index it binds tokens to.
    pub mod identity {
        pub use crate::identity::{jwt, pods};
    }
    pub use crate::api_endpoints::Discovered;
}
