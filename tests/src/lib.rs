//! Test support for kgate: network-namespace and cgroup topologies for the kernel tests,
//! and a faithful Kubernetes API-server double (its own crate, re-exported here).
pub use kgate_apiserver_double as apiserver;
pub use kgate_apiserver_double::pki;
pub mod background;
pub mod console;
pub mod container;
pub mod fault_proxy;
pub mod harness;
pub mod kernel;
pub mod oidc;
pub mod recorder;
pub mod topology;
