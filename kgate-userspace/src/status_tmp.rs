//! TEMPORARY shim until status.rs lands.
use serde::Serialize;
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub metadata: serde_json::Value,
    pub status: &'static str,
    pub message: String,
    pub reason: &'static str,
    pub code: u16,
}
impl Status {
    fn new(code: u16, reason: &'static str, message: String) -> Self {
        Self {
            api_version: "v1",
            kind: "Status",
            metadata: serde_json::json!({}),
            status: "Failure",
            message,
            reason,
            code,
        }
    }
    pub fn forbidden(m: String) -> Self {
        Self::new(403, "Forbidden", m)
    }
    pub fn bad_request(m: String) -> Self {
        Self::new(400, "BadRequest", m)
    }
    pub fn service_unavailable(m: String) -> Self {
        Self::new(503, "ServiceUnavailable", m)
    }
    pub fn http_status(&self) -> http::StatusCode {
        http::StatusCode::from_u16(self.code).unwrap()
    }
    pub fn to_json(&self) -> bytes::Bytes {
        serde_json::to_vec(self).unwrap().into()
    }
}
