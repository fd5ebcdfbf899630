//! The page, its script and styles, embedded in the binary by build.rs from
//! `target/console/dist` (built by `cargo xtask console`). Without them the binary
//! still builds, with [`BUILT`] false: `kgate console` then serves its API, and says
//! (at start and instead of the page) how to build them.
//!
//! Not here: building them (console/build.mjs).

use http::{Response, StatusCode, header};

use super::{error, viewer::Credentials};
use crate::body::{self, Body};

/// What the console says when its assets were not built.
pub(super) const NOT_BUILT: &str = "this kgate was built without the console's assets \
     (target/console/dist), so the console serves its API but no page: run \
     `cargo xtask console`, then build kgate again";

// `BUILT` and `FILES: &[(&str, &[u8])]` (name relative to the dist directory).
include!(concat!(env!("OUT_DIR"), "/console_assets.rs"));

/// The app's page for any of its routes, with this process's CSRF token and mode.
pub(super) fn page(csrf: &str, credentials: Credentials) -> Response<Body> {
    let Some(html) = file("index.html") else {
        return error(StatusCode::SERVICE_UNAVAILABLE, NOT_BUILT);
    };
    let mode = credentials.name();
    let html = String::from_utf8_lossy(html)
        .replace("{{CSRF}}", csrf)
        .replace("{{MODE}}", mode);
    Response::builder()
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .body(body::full(html))
        .unwrap_or_else(|_| Response::new(body::empty()))
}

/// `/assets/NAME`.
pub(super) fn asset(name: &str) -> Response<Body> {
    let Some(bytes) = file(name).filter(|_| name != "index.html") else {
        return error(StatusCode::NOT_FOUND, &format!("no asset {name}"));
    };
    Response::builder()
        .header(header::CONTENT_TYPE, content_type(name))
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body::full(bytes))
        .unwrap_or_else(|_| Response::new(body::empty()))
}

fn file(name: &str) -> Option<&'static [u8]> {
    FILES.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("html") => "text/html; charset=utf-8",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        Some("wasm") => "application/wasm",
        Some("map") => "application/json",
        _ => "application/octet-stream",
    }
}
