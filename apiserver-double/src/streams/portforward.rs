//! `portforward`: every port of the fake container is an echo server that sends each
//! byte back verbatim, and answers EOF with EOF (the kubelet then half-closes the
//! error stream, then the data stream).
//!
//! Three transports, as a real cluster has them:
//! - SPDY/3.1 (`X-Stream-Protocol-Version: portforward.k8s.io`): per forwarded
//!   connection the client opens an `error` and a `data` stream carrying `port` and
//!   `requestID` headers; streams with a bad port or type are reset, as the kubelet does.
//! - SPDY over WebSocket (`Sec-WebSocket-Protocol: SPDY/3.1+portforward.k8s.io`, what
//!   kubectl 1.31+ sends): the API server's tunnel, the same SPDY session inside binary
//!   messages.
//! - The kubelet's WebSocket channel protocol (`v4.channel.k8s.io`,
//!   `v4.base64.channel.k8s.io`, or none) with `?ports=`: per port a data channel
//!   (2i) and an error channel (2i+1), each opened by the port as two little-endian
//!   bytes; the echo lasts as long as the WebSocket.
//!
//! Not here: ports with nothing listening (every port echoes), the pair-creation timeout.

use std::collections::HashMap;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use tokio::sync::mpsc;

use super::{
    Body, Pod, Req, Upgrade, plain,
    spdy::{self, Conn},
    tunnel::Tunnel,
    upgrade_of, upgrade_required,
    websocket::{self, Codec, Inbound, Ws},
};

const SPDY_PROTOCOL: &str = "portforward.k8s.io";
const TUNNEL_PREFIX: &str = "SPDY/3.1+";
const WS_PROTOCOLS: &[&str] = &["", "v4.channel.k8s.io", "v4.base64.channel.k8s.io"];

pub(super) fn serve(req: &mut Req, _pod: Pod) -> hyper::Response<Body> {
    match upgrade_of(req) {
        Some(Upgrade::Spdy) => {
            let client = spdy::client_protocols(req);
            spdy_upgrade(req, &client, false)
        }
        Some(Upgrade::WebSocket) => {
            let offered = websocket::offered(req);
            if offered.iter().any(|p| p.starts_with(TUNNEL_PREFIX)) {
                let inner: Vec<String> = offered
                    .iter()
                    .filter_map(|p| p.strip_prefix(TUNNEL_PREFIX).map(str::to_owned))
                    .collect();
                spdy_upgrade(req, &inner, true)
            } else {
                channels_upgrade(req)
            }
        }
        None => upgrade_required(),
    }
}

/// SPDY directly, or (with the WebSocket protocols offered) tunnelled: the API server
/// negotiates the SPDY protocol with the kubelet first, and names the result
/// `SPDY/3.1+<protocol>` in its WebSocket answer.
fn spdy_upgrade(req: &mut Req, client: &[String], tunnel: bool) -> hyper::Response<Body> {
    let accepted = match spdy::negotiate(client, req, &[SPDY_PROTOCOL]) {
        Ok(accepted) => accepted,
        Err(response) => return response,
    };
    if !tunnel {
        let response = accepted.switching();
        tokio::spawn(async move {
            if let Some(io) = accepted.open().await {
                let (conn, streams) = spdy::serve(io);
                spdy_session(conn, streams).await;
            }
        });
        return response;
    }
    // The kubelet half of the handshake is settled; give the upgrade back to the
    // WebSocket side.
    req.upgrade = Some(accepted.into_upgrade());
    let name = format!("{TUNNEL_PREFIX}{SPDY_PROTOCOL}");
    match websocket::negotiate(req, &[name.as_str()]) {
        Ok(ws) => {
            let response = ws.switching(None);
            tokio::spawn(async move {
                if let Some(ws) = ws.open().await {
                    let (conn, streams) = spdy::serve(Tunnel::new(ws));
                    spdy_session(conn, streams).await;
                }
            });
            response
        }
        Err(response) => response,
    }
}

#[derive(Default)]
struct Pair {
    data: Option<spdy::Stream>,
    error: Option<spdy::Stream>,
}

/// The kubelet's `httpStreamHandler`: pairs streams by request id, forwards each pair.
async fn spdy_session(conn: Conn, mut incoming: mpsc::UnboundedReceiver<spdy::Stream>) {
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    while let Some(stream) = incoming.recv().await {
        let port = stream
            .header("port")
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|&p| p > 0);
        let kind = stream.header("streamtype").unwrap_or_default().to_owned();
        if port.is_none() || !matches!(kind.as_str(), "data" | "error") {
            conn.reset(stream.id);
            continue;
        }
        conn.reply(stream.id);
        // Clients older than the requestID header: the pair's error stream id, as the
        // kubelet guesses it.
        let request = match stream.header("requestid") {
            Some(id) if !id.is_empty() => id.to_owned(),
            _ if kind == "data" => stream.id.saturating_sub(2).to_string(),
            _ => stream.id.to_string(),
        };
        let pair = pairs.entry(request.clone()).or_default();
        if kind == "data" {
            pair.data = Some(stream);
        } else {
            pair.error = Some(stream);
        }
        if pair.data.is_some()
            && pair.error.is_some()
            && let Some(Pair {
                data: Some(data),
                error: Some(error),
            }) = pairs.remove(&request)
        {
            tokio::spawn(echo(conn.clone(), data, error));
        }
    }
}

async fn echo(conn: Conn, mut data: spdy::Stream, error: spdy::Stream) {
    while let Some(chunk) = data.data.recv().await {
        conn.data(data.id, chunk, false);
    }
    conn.data(error.id, Bytes::new(), true);
    conn.data(data.id, Bytes::new(), true);
}

/// The kubelet's WebSocket port-forward.
fn channels_upgrade(req: &mut Req) -> hyper::Response<Body> {
    let mut ports = Vec::new();
    let values = req.query_all("ports");
    if values.is_empty() {
        return plain(
            StatusCode::BAD_REQUEST,
            "query parameter \"port\" is required",
        );
    }
    for value in values {
        for p in value.split(',') {
            match p.parse::<u16>() {
                Ok(port) if port > 0 => ports.push(port),
                _ => {
                    return plain(
                        StatusCode::BAD_REQUEST,
                        &format!("unable to parse \"{value}\" as a port"),
                    );
                }
            }
        }
    }
    let accepted = match websocket::negotiate(req, WS_PROTOCOLS) {
        Ok(accepted) => accepted,
        Err(response) => return response,
    };
    let response = accepted.switching(None);
    let codec = Codec::of(&accepted.protocol);
    tokio::spawn(async move {
        if let Some(ws) = accepted.open().await {
            channels(ws, codec, &ports).await;
        }
    });
    response
}

async fn channels(mut ws: Ws, codec: Codec, ports: &[u16]) {
    for (i, port) in ports.iter().enumerate() {
        let data = u8::try_from(2 * i).unwrap_or(u8::MAX);
        for channel in [data, data + 1] {
            if ws
                .send(codec.frame(channel, &port.to_le_bytes()))
                .await
                .is_err()
            {
                return;
            }
        }
    }
    while let Some(Ok(message)) = ws.next().await {
        let echo = match codec.parse(&message, false) {
            Inbound::Data(channel, bytes)
                if channel % 2 == 0 && usize::from(channel / 2) < ports.len() =>
            {
                Some(codec.frame(channel, &bytes))
            }
            Inbound::End => break,
            _ => None,
        };
        if let Some(frame) = echo
            && ws.send(frame).await.is_err()
        {
            return;
        }
    }
    let _ = ws.send(websocket::normal_close()).await;
    let _ = SinkExt::close(&mut ws).await;
}
