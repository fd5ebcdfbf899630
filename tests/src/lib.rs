//! Test support for kgate: network-namespace and cgroup topologies for the kernel tests,
//! and a faithful Kubernetes API-server double.
pub mod apiserver;
pub mod fault_proxy;
pub mod harness;
pub mod kernel;
pub mod pki;
pub mod recorder;
pub mod topology;
