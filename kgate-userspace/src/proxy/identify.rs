//! The **identify** stage: who is calling, verified and bound to the pod the kernel
//! says the connection came from. The rules live in [`crate::identity`]; this stage
//! applies them to one request.

use http::HeaderMap;

use crate::connection::Connection;
use crate::identity::{Identifier, Identity, Unidentified};

/// The caller's identity, or why the request is refused ([`Unidentified::status`]: 401,
/// 403 or 503). A refusal after the token verified carries the user, and a stolen
/// token's both pods, for its record.
pub(crate) async fn identify(
    identifier: &Identifier,
    conn: &Connection,
    headers: &HeaderMap,
) -> Result<Identity, Unidentified> {
    identifier.identify(conn, headers).await
}
