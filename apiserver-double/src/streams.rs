//! The pod subresources that stream: `log` (with `follow`), `exec` and `attach` (over
//! the WebSocket channel protocols and SPDY/3.1), and `portforward` (SPDY/3.1, SPDY
//! tunnelled through a WebSocket as kubectl 1.31+ does, and the kubelet's WebSocket
//! channel protocol). The double plays the API server, the kubelet and the container
//! runtime at once, so what a client sees on the wire is what the real chain sends:
//! the WebSocket v5 path answers as the API server's stream translator does, everything
//! else as the kubelet (whose responses the API server relays verbatim).
//!
//! The containers run fake programs (see [`process`]): `cat`, `echo`, `sh -c "exit N"`,
//! `env`, `sleep`, `hostname`, `stty size`, ...; attach reaches a main process that
//! echoes its stdin; every container port answers as an echo server, but a
//! `hostNetwork` pod's ports are the node's, and the double runs as the node: there
//! port-forward connects to `localhost` for real.
//!
//! Not here: real processes, signals, `sinceSeconds`/`sinceTime` on logs, SPDY flow
//! control (kubelet's spdystream does none either), the stream-pair creation timeout
//! of port-forward, and a terminal's input echo.

mod logs;
mod portforward;
mod process;
mod remotecommand;
mod spdy;
mod status;
mod tunnel;
mod websocket;

use std::time::Duration;

use http::{HeaderValue, Method, StatusCode, header};
use serde_json::Value;

use super::{Body, Req, status};

/// The default interval between follow-mode log lines; `KGATE_DOUBLE_LOG_INTERVAL_MS`
/// overrides it (read per request, so one test binary can change it).
pub const LOG_INTERVAL: Duration = Duration::from_millis(200);

/// The pod a streaming request is for, as the kubelet knows it.
#[derive(Clone, Debug)]
pub(crate) struct Pod {
    pub name: String,
    /// `spec.containers[].env` (literal values) of the chosen container.
    pub env: Vec<(String, String)>,
    /// `spec.hostNetwork`: the pod shares the node's (the double's) network namespace.
    pub host_network: bool,
    /// What the container runtime calls the pod's sandbox (the pod's UID here).
    pub sandbox: String,
}

pub(crate) fn serve(mut req: Req, pod: &Value, sub: &str) -> hyper::Response<Body> {
    let name = pod["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let containers: Vec<&Value> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let names: Vec<String> = containers
        .iter()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect();
    let allowed: &[Method] = if sub == "log" {
        &[Method::GET]
    } else {
        &[Method::GET, Method::POST]
    };
    if !allowed.contains(&req.method) {
        return status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!(
                "the server does not allow this method on the requested resource (pods/{sub})"
            ),
        );
    }
    let container = if sub == "portforward" {
        None
    } else {
        match req.query("container") {
            Some(c) if !names.iter().any(|x| x == c) => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("container {c} is not valid for pod {name}"),
                );
            }
            None if names.len() > 1 => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!(
                        "a container name must be specified for pod {name}, choose one of: [{}]",
                        names.join(" ")
                    ),
                );
            }
            Some(c) => Some(c.to_owned()),
            None => names.first().cloned(),
        }
    };
    if matches!(sub, "exec" | "attach")
        && let Some(phase @ ("Succeeded" | "Failed")) = pod["status"]["phase"].as_str()
    {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("cannot {sub} into a container in a completed pod; current phase is {phase}"),
        );
    }
    let env = containers
        .iter()
        .find(|c| c["name"].as_str() == container.as_deref())
        .and_then(|c| c["env"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_owned(),
                e["value"].as_str()?.to_owned(),
            ))
        })
        .collect();
    let pod = Pod {
        name,
        env,
        host_network: pod["spec"]["hostNetwork"].as_bool() == Some(true),
        sandbox: pod["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    };
    match sub {
        "log" => logs::serve(&req, &pod, container.as_deref().unwrap_or_default()),
        "exec" | "attach" => remotecommand::serve(&mut req, pod, sub == "attach"),
        _ => portforward::serve(&mut req, pod),
    }
}

// === helpers shared by the protocols ===

/// The `Upgrade` the client asked for, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Upgrade {
    WebSocket,
    Spdy,
}

fn upgrade_of(req: &Req) -> Option<Upgrade> {
    let connection = req
        .header("connection")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let upgrade = req
        .header("upgrade")
        .unwrap_or_default()
        .to_ascii_lowercase();
    if !connection.contains("upgrade") {
        return None;
    }
    if upgrade.contains("websocket") {
        Some(Upgrade::WebSocket)
    } else if upgrade.contains("spdy/3.1") {
        Some(Upgrade::Spdy)
    } else {
        None
    }
}

/// What the API server answers a streaming subresource request that is no upgrade.
fn upgrade_required() -> hyper::Response<Body> {
    status(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        "Upgrade request required",
    )
}

/// A plain-text error, as the kubelet writes with `http.Error` (and the API server's
/// upgrade-aware proxy passes on unchanged).
fn plain(code: StatusCode, message: &str) -> hyper::Response<Body> {
    let mut response = hyper::Response::new(super::full(format!("{message}\n")));
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// `true` for what Go's `strconv.ParseBool` reads as true (the API server decodes
/// query parameters with it).
fn is_true(value: Option<&str>) -> bool {
    matches!(value, Some("1" | "t" | "T" | "true" | "TRUE" | "True"))
}
