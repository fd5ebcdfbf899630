//! The **identify** stage: who is calling, verified and bound to the pod the kernel
//! says the connection came from. The rules live in [`crate::identity`]; this stage
//! applies them to one request.

use http::HeaderMap;

use super::accept::Connection;
use crate::{
    identity::{Identifier, Identity},
    status::Status,
};

/// The caller's identity, or the Status that refuses the request (401, 403 or 503).
pub async fn identify(
    identifier: &Identifier,
    conn: &Connection,
    headers: &HeaderMap,
) -> Result<Identity, Status> {
    identifier.identify(conn, headers).await
}
