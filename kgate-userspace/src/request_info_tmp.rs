//! TEMPORARY shim until request_info.rs lands.
#[derive(Clone, Debug, Default)]
pub struct RequestInfo {
    pub path: String,
    pub verb: String,
    pub api_group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
}
impl RequestInfo {
    pub fn parse(method: &http::Method, uri: &http::Uri) -> Result<Self, String> {
        if !uri.path().starts_with('/') {
            return Err("bad path".into());
        }
        Ok(Self {
            path: uri.path().to_owned(),
            verb: method.as_str().to_lowercase(),
            ..Self::default()
        })
    }
}
