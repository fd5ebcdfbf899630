//! `portforward`: every port of the fake container is an echo server that sends each
//! byte back verbatim, and answers EOF with EOF (the kubelet then half-closes the
//! error stream, then the data stream).
//!
//! A `hostNetwork` pod is different: its network namespace is the node's, and the
//! double runs as the node, so a port leads where the container runtime would dial,
//! `localhost:PORT` (IPv4, then IPv6), and a port with nothing listening fails as the
//! kubelet reports it: its `portForward` writes `error forwarding port P to pod
//! SANDBOX, uid : ERR` on the pair's error stream (pkg/kubelet/cri/streaming/portforward,
//! httpstream.go and websocket.go; the streaming server passes the sandbox ID and no
//! UID), ERR being containerd's `failed to connect to localhost:P inside namespace
//! "SANDBOX", IPv4: … IPv6 … ` (internal/cri/server/sandbox_portforward_linux.go, the
//! host-network branch), then closes the pair. A forwarded connection ends as
//! containerd's does: when one direction ends, the other gets a second to finish.
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
//! Not here: ports with nothing listening in other pods (every port echoes), the
//! pair-creation timeout.

use std::collections::HashMap;

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::mpsc,
};
use tokio_tungstenite::tungstenite::Message;

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

/// Where a forwarded port leads.
#[derive(Clone, Debug)]
enum Target {
    /// The fake container's echo server.
    Echo,
    /// The node's `localhost` (a host-network pod), named by its sandbox.
    Host(String),
}

/// How long the other direction of a forwarded connection may take to finish once
/// one has (containerd's `portForward` waits a second).
const LINGER: Duration = Duration::from_secs(1);

pub(super) fn serve(req: &mut Req, pod: Pod) -> hyper::Response<Body> {
    let target = if pod.host_network {
        Target::Host(pod.sandbox)
    } else {
        Target::Echo
    };
    match upgrade_of(req) {
        Some(Upgrade::Spdy) => {
            let client = spdy::client_protocols(req);
            spdy_upgrade(req, &client, false, target)
        }
        Some(Upgrade::WebSocket) => {
            let offered = websocket::offered(req);
            if offered.iter().any(|p| p.starts_with(TUNNEL_PREFIX)) {
                let inner: Vec<String> = offered
                    .iter()
                    .filter_map(|p| p.strip_prefix(TUNNEL_PREFIX).map(str::to_owned))
                    .collect();
                spdy_upgrade(req, &inner, true, target)
            } else {
                channels_upgrade(req, target)
            }
        }
        None => upgrade_required(),
    }
}

/// SPDY directly, or (with the WebSocket protocols offered) tunnelled: the API server
/// negotiates the SPDY protocol with the kubelet first, and names the result
/// `SPDY/3.1+<protocol>` in its WebSocket answer.
fn spdy_upgrade(
    req: &mut Req,
    client: &[String],
    tunnel: bool,
    target: Target,
) -> hyper::Response<Body> {
    let accepted = match spdy::negotiate(client, req, &[SPDY_PROTOCOL]) {
        Ok(accepted) => accepted,
        Err(response) => return response,
    };
    if !tunnel {
        let response = accepted.switching();
        tokio::spawn(async move {
            if let Some(io) = accepted.open().await {
                let (conn, streams) = spdy::serve(io);
                spdy_session(conn, streams, target).await;
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
                    spdy_session(conn, streams, target).await;
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
async fn spdy_session(
    conn: Conn,
    mut incoming: mpsc::UnboundedReceiver<spdy::Stream>,
    target: Target,
) {
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
            match &target {
                Target::Echo => tokio::spawn(echo(conn.clone(), data, error)),
                Target::Host(sandbox) => {
                    tokio::spawn(forward_spdy(conn.clone(), data, error, sandbox.clone()))
                }
            };
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

/// containerd's dial for a host-network sandbox: `localhost:PORT` over IPv4, then
/// IPv6; the error is the kubelet's whole message for the pair's error stream.
async fn dial(port: u16, sandbox: &str) -> Result<TcpStream, String> {
    let v4 = match TcpStream::connect(("127.0.0.1", port)).await {
        Ok(tcp) => return Ok(tcp),
        Err(e) => e,
    };
    let v6 = match TcpStream::connect(("::1", port)).await {
        Ok(tcp) => return Ok(tcp),
        Err(e) => e,
    };
    // Go's net.OpError text: `dial tcp4 127.0.0.1:P: connect: connection refused`.
    let go = |e: &std::io::Error| match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        std::io::ErrorKind::AddrNotAvailable => "cannot assign requested address".to_owned(),
        _ => e.to_string(),
    };
    Err(format!(
        "error forwarding port {port} to pod {sandbox}, uid : failed to connect to localhost:{port} \
         inside namespace \"{sandbox}\", IPv4: dial tcp4 127.0.0.1:{port}: connect: {} \
         IPv6 dial tcp6 [::1]:{port}: connect: {} ",
        go(&v4),
        go(&v6)
    ))
}

/// One SPDY stream pair to the node's `localhost`.
async fn forward_spdy(conn: Conn, mut data: spdy::Stream, error: spdy::Stream, sandbox: String) {
    let port = data
        .header("port")
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or_default();
    let tcp = match dial(port, &sandbox).await {
        Ok(tcp) => tcp,
        Err(message) => {
            conn.data(error.id, Bytes::from(message), true);
            conn.data(data.id, Bytes::new(), true);
            return;
        }
    };
    let (mut from_port, mut to_port) = tcp.into_split();
    let (out, id) = (conn.clone(), data.id);
    let mut up = tokio::spawn(async move {
        let mut buf = vec![0; 32 << 10];
        while let Ok(n @ 1..) = from_port.read(&mut buf).await {
            out.data(id, Bytes::copy_from_slice(&buf[..n]), false);
        }
    });
    let down = async {
        while let Some(chunk) = data.data.recv().await {
            if to_port.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to_port.shutdown().await;
    };
    tokio::pin!(down);
    tokio::select! {
        _ = &mut up => { let _ = tokio::time::timeout(LINGER, down).await; }
        () = &mut down => { let _ = tokio::time::timeout(LINGER, &mut up).await; }
    }
    up.abort();
    conn.data(error.id, Bytes::new(), true);
    conn.data(data.id, Bytes::new(), true);
}

/// The kubelet's WebSocket port-forward.
fn channels_upgrade(req: &mut Req, target: Target) -> hyper::Response<Body> {
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
            match target {
                Target::Echo => channels(ws, codec, &ports).await,
                Target::Host(sandbox) => channels_to_host(ws, codec, &ports, &sandbox).await,
            }
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

/// What a port's reader hands the WebSocket writer.
enum Out {
    Frame(Message),
    /// The port's connection ended.
    Done,
}

/// The WebSocket port-forward of a host-network pod: each port dialled on the node's
/// `localhost`; a port that cannot be reached gets the kubelet's message on its error
/// channel. The WebSocket closes when every port's connection has ended (the kubelet's
/// handler returns when every pair's `portForward` has).
async fn channels_to_host(mut ws: Ws, codec: Codec, ports: &[u16], sandbox: &str) {
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
    let (tx, mut rx) = mpsc::channel::<Out>(16);
    let mut writers = Vec::new();
    let mut live = 0;
    for (i, port) in ports.iter().enumerate() {
        let channel = u8::try_from(2 * i).unwrap_or(u8::MAX);
        match dial(*port, sandbox).await {
            Ok(tcp) => {
                let (mut from_port, to_port) = tcp.into_split();
                writers.push(Some(to_port));
                live += 1;
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0; 32 << 10];
                    while let Ok(n @ 1..) = from_port.read(&mut buf).await {
                        if tx
                            .send(Out::Frame(codec.frame(channel, &buf[..n])))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    let _ = tx.send(Out::Done).await;
                });
            }
            Err(message) => {
                writers.push(None);
                if ws
                    .send(codec.frame(channel + 1, message.as_bytes()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
    drop(tx);
    while live > 0 {
        tokio::select! {
            message = ws.next() => {
                let Some(Ok(message)) = message else { break };
                match codec.parse(&message, false) {
                    Inbound::Data(channel, bytes) if channel % 2 == 0 => {
                        if let Some(Some(w)) = writers.get_mut(usize::from(channel / 2))
                            && w.write_all(&bytes).await.is_err()
                        {
                            writers[usize::from(channel / 2)] = None;
                        }
                    }
                    Inbound::End => break,
                    _ => {}
                }
            }
            out = rx.recv() => match out {
                Some(Out::Frame(frame)) => {
                    if ws.send(frame).await.is_err() {
                        return;
                    }
                }
                Some(Out::Done) => live -= 1,
                None => break,
            }
        }
    }
    let _ = ws.send(websocket::normal_close()).await;
    let _ = SinkExt::close(&mut ws).await;
}
