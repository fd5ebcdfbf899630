//! Pod logs (with `follow`) and exec/attach over the WebSocket channel protocols
//! (`v5.channel.k8s.io`, `v4.channel.k8s.io`), with fake commands: `echo`, `cat`,
//! `false`, `sh -c "exit N"`, `hostname`, `env`, `sleep N`.
//!
//! Not served: SPDY/3.1 upgrades and port-forward (answered with a 400 Status saying
//! so, which is what kubectl then reports).

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Message,
        handshake::derive_accept_key,
        protocol::{CloseFrame, Role, frame::coding::CloseCode},
    },
};

use super::{Body, Req, status};

const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// The interval between follow-mode log lines.
pub const LOG_INTERVAL: Duration = Duration::from_millis(200);

pub fn serve(mut req: Req, pod: &Value, sub: &str) -> hyper::Response<Body> {
    let name = pod["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let containers: Vec<String> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect();
    match req.query("container") {
        Some(c) if !containers.iter().any(|x| x == c) => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("container {c} is not valid for pod {name}"),
            );
        }
        None if containers.len() > 1 => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    containers.join(" ")
                ),
            );
        }
        _ => {}
    }
    match sub {
        "log" => logs(&req),
        "exec" | "attach" => {
            let upgrade = req
                .header("upgrade")
                .unwrap_or_default()
                .to_ascii_lowercase();
            if upgrade != "websocket" {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!(
                        "this API-server double serves {sub} over WebSocket only (v5/v4.channel.k8s.io), not {upgrade:?}"
                    ),
                );
            }
            let command: Vec<String> = if sub == "attach" {
                vec!["cat".into()]
            } else {
                req.query_all("command")
                    .into_iter()
                    .map(str::to_owned)
                    .collect()
            };
            websocket(&mut req, name, command)
        }
        _ => status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "port-forward is not served by this API-server double",
        ),
    }
}

fn logs(req: &Req) -> hyper::Response<Body> {
    let follow = matches!(req.query("follow"), Some("true" | "1"));
    let tail: usize = req
        .query("tailLines")
        .and_then(|t| t.parse().ok())
        .unwrap_or(10)
        .min(10);
    let (tx, body) = super::channel_body();
    tokio::spawn(async move {
        for i in (10 - tail + 1)..=10 {
            if tx.send(Bytes::from(format!("line {i}\n"))).await.is_err() {
                return;
            }
        }
        if !follow {
            return;
        }
        let mut i = 10;
        loop {
            tokio::time::sleep(LOG_INTERVAL).await;
            i += 1;
            if tx.send(Bytes::from(format!("line {i}\n"))).await.is_err() {
                return;
            }
        }
    });
    super::response(StatusCode::OK, "text/plain", body)
}

fn websocket(req: &mut Req, pod: String, command: Vec<String>) -> hyper::Response<Body> {
    let offered = req
        .header("sec-websocket-protocol")
        .unwrap_or_default()
        .to_owned();
    let Some(protocol) = offered
        .split(',')
        .map(str::trim)
        .find(|p| PROTOCOLS.contains(p))
    else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "none of the offered subprotocols {offered:?} is supported; supported: {PROTOCOLS:?}"
            ),
        );
    };
    let Some(key) = req.header("sec-websocket-key") else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "missing Sec-WebSocket-Key",
        );
    };
    let accept = derive_accept_key(key.as_bytes());
    let Some(on_upgrade) = req.upgrade.take() else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the connection cannot be upgraded",
        );
    };
    let v5 = protocol == "v5.channel.k8s.io";
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        run(ws, &pod, &command, v5).await;
    });
    let mut response = hyper::Response::new(super::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
    );
    h.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(if v5 { PROTOCOLS[0] } else { PROTOCOLS[1] }),
    );
    response
}

async fn run<S>(ws: WebSocketStream<S>, pod: &str, command: &[String], v5: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut tx, mut rx) = ws.split();
    let frame = |channel: u8, data: &[u8]| Message::Binary([&[channel][..], data].concat().into());
    let args: Vec<&str> = command.iter().map(String::as_str).collect();
    let exit: Result<i32, String> = match args.as_slice() {
        ["echo", rest @ ..] => tx
            .send(frame(1, format!("{}\n", rest.join(" ")).as_bytes()))
            .await
            .map(|()| 0)
            .map_err(|e| e.to_string()),
        ["hostname"] => tx
            .send(frame(1, format!("{pod}\n").as_bytes()))
            .await
            .map(|()| 0)
            .map_err(|e| e.to_string()),
        ["env"] => tx
            .send(frame(
                1,
                format!("PATH=/usr/bin:/bin\nHOSTNAME={pod}\n").as_bytes(),
            ))
            .await
            .map(|()| 0)
            .map_err(|e| e.to_string()),
        ["false"] => Ok(1),
        ["true"] => Ok(0),
        ["sh", "-c", script] => Ok(script
            .strip_prefix("exit ")
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)),
        ["sleep", secs] => {
            tokio::time::sleep(Duration::from_secs_f64(secs.parse().unwrap_or(0.0))).await;
            Ok(0)
        }
        ["cat"] => {
            // Echo stdin (channel 0) to stdout until stdin closes: the v5 close signal
            // (255, 0), or the socket itself.
            loop {
                match rx.next().await {
                    Some(Ok(Message::Binary(data))) => match data.first() {
                        Some(0)
                            if data.len() > 1 && tx.send(frame(1, &data[1..])).await.is_err() =>
                        {
                            return;
                        }
                        Some(255) if v5 && data.get(1) == Some(&0) => break,
                        _ => {}
                    },
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                    Some(Ok(_)) => {}
                }
            }
            Ok(0)
        }
        _ => Err(format!(
            "OCI runtime exec failed: exec failed: unable to start container process: exec: \"{}\": executable file not found in $PATH: unknown",
            args.first().unwrap_or(&"")
        )),
    };
    let status = match exit {
        Ok(0) => json!({"metadata": {}, "status": "Success"}),
        Ok(code) => json!({
            "metadata": {}, "status": "Failure",
            "message": format!("command terminated with non-zero exit code: error executing command {command:?}, exit code {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}
        }),
        Err(message) => {
            json!({"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError"})
        }
    };
    let _ = tx
        .send(frame(3, &serde_json::to_vec(&status).unwrap_or_default()))
        .await;
    // A normal close (1000): without a status code, client-go reports an error.
    let close = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let _ = tx.send(Message::Close(Some(close))).await;
    let _ = tx.close().await;
}
