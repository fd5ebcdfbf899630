//! The agent's seam to the API server as a client: its own kube-rs client
//! ([`apiclient`]) and every kube-runtime watch. Each watched kind goes through the one
//! [`reflector`] (buffer a list, swap it in whole, a ready latch, the last good state
//! kept through an outage); the adapters turn objects into the plain data their
//! modules use:
//!
//! - [`pods`]: this node's pods, for the identity stage's pod index
//!   ([`crate::identity::pods`]);
//! - [`policies`]: `KgatePolicy` objects, compiled, for the policy store
//!   ([`crate::policy::store`]);
//! - [`endpoint_discovery`]: the `kubernetes` Service and its EndpointSlices, for the
//!   API server's endpoint set ([`crate::api_endpoints`]);
//! - [`approvals`]: `KgateApproval` objects, for `kgate console`'s live page.
//!
//! Not here: what the data means (pod binding, policy evaluation, which endpoints to
//! intercept or dial stay pure code in those modules), and one-off API calls that are
//! not watches: TokenReview and JWKS ([`crate::identity`]), approval objects
//! ([`crate::approval`]), the heartbeat Lease ([`crate::admin::heartbeat`]).

pub(crate) mod apiclient;
pub(crate) mod approvals;
pub mod endpoint_discovery;
pub mod pods;
pub(crate) mod policies;
pub(crate) mod reflector;
