//! WebSocket upgrades on hyper's upgraded connection (tungstenite does the RFC 6455
//! framing), the Kubernetes channel framing (`[channel byte][data]` in binary
//! messages; `'0'+channel` then base64 in text messages for the `base64.` variants;
//! v5's `[255, channel]` half-close), and exec/attach sessions over it.
//!
//! Negotiation follows apimachinery's `wsstream`: the first protocol in the client's
//! `Sec-WebSocket-Protocol` list that the server has, `""` when the client offers
//! none, and a bare 403 when nothing matches. Exec/attach: `v5.channel.k8s.io` is
//! answered as the API server's stream translator does (statuses re-wrapped, see
//! [`super::status`](mod@super::status)); the rest (`v5.base64.`, `v4.`, `v4.base64.`, `channel.k8s.io`,
//! `base64.channel.k8s.io`) as the kubelet does. Before v4 the error channel carries
//! the failure message as text, and nothing on success.
//!
//! Not here: an empty `Sec-WebSocket-Protocol` response header when the client offered
//! none (the kubelet sends one; the double leaves the header out).
//!
//! The channel framing is deliberately independent of kgate's (its stream recorder):
//! an independent implementation is what makes the recording tests a cross-check.

use base64::{Engine as _, engine::general_purpose::STANDARD};
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, StatusCode, header};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Message,
        handshake::derive_accept_key,
        protocol::{CloseFrame, Role, frame::coding::CloseCode},
    },
};

use super::{
    Body, Pod, Req,
    process::{self, Fd, Io, Output, Program, ResizeDecoder},
    remotecommand::Options,
    status as exit_status,
};

pub(super) type Ws = WebSocketStream<TokioIo<Upgraded>>;

/// The exec/attach protocols, in no particular order (the client's order decides).
pub(super) const EXEC_PROTOCOLS: &[&str] = &[
    "",
    "channel.k8s.io",
    "base64.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "v5.channel.k8s.io",
    "v5.base64.channel.k8s.io",
];

/// The request side of an accepted upgrade.
pub(super) struct Accepted {
    pub protocol: String,
    accept: String,
    upgrade: OnUpgrade,
}

/// Every protocol the client offers (the first header line, comma-separated, as Go's
/// `Header.Get` reads it).
pub(super) fn offered(req: &Req) -> Vec<String> {
    req.header("sec-websocket-protocol")
        .unwrap_or_default()
        .split(',')
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

/// Checks the handshake and picks the protocol.
pub(super) fn negotiate(
    req: &mut Req,
    allowed: &[&str],
) -> Result<Accepted, hyper::Response<Body>> {
    if req.header("sec-websocket-version") != Some("13") {
        let mut response = super::plain(StatusCode::BAD_REQUEST, "Bad Request");
        response
            .headers_mut()
            .insert("sec-websocket-version", HeaderValue::from_static("13"));
        return Err(response);
    }
    let Some(key) = req.header("sec-websocket-key") else {
        return Err(super::plain(
            StatusCode::BAD_REQUEST,
            "missing Sec-WebSocket-Key",
        ));
    };
    let accept = derive_accept_key(key.as_bytes());
    let mut offered = offered(req);
    if offered.is_empty() {
        offered.push(String::new());
    }
    let Some(protocol) = offered.into_iter().find(|p| allowed.contains(&p.as_str())) else {
        let mut forbidden = hyper::Response::new(super::super::empty());
        *forbidden.status_mut() = StatusCode::FORBIDDEN;
        return Err(forbidden);
    };
    let Some(upgrade) = req.upgrade.take() else {
        return Err(super::upgrade_required());
    };
    Ok(Accepted {
        protocol,
        accept,
        upgrade,
    })
}

impl Accepted {
    /// The 101 answer; `protocol` overrides the negotiated name (the SPDY tunnel).
    pub(super) fn switching(&self, protocol: Option<&str>) -> hyper::Response<Body> {
        let mut response = hyper::Response::new(super::super::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = response.headers_mut();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(
            header::SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_str(&self.accept).expect("base64 is a valid header value"),
        );
        let protocol = protocol.unwrap_or(&self.protocol);
        if !protocol.is_empty() {
            h.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_str(protocol).expect("negotiated from a header value"),
            );
        }
        response
    }

    /// The WebSocket, once hyper hands over the connection.
    pub(super) async fn open(self) -> Option<Ws> {
        let upgraded = self.upgrade.await.ok()?;
        Some(WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await)
    }
}

// === channel framing ===

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Codec {
    Binary,
    Base64,
}

/// A message from the client, decoded.
pub(super) enum Inbound {
    Data(u8, Vec<u8>),
    /// v5: the client will send nothing more on this channel.
    Close(u8),
    Skip,
    End,
}

impl Codec {
    pub(super) fn of(protocol: &str) -> Self {
        if protocol.contains("base64.") {
            Self::Base64
        } else {
            Self::Binary
        }
    }

    pub(super) fn frame(self, channel: u8, data: &[u8]) -> Message {
        match self {
            Self::Binary => Message::Binary([&[channel][..], data].concat().into()),
            Self::Base64 => Message::Text(
                format!("{}{}", char::from(b'0' + channel), STANDARD.encode(data)).into(),
            ),
        }
    }

    pub(super) fn parse(self, message: &Message, v5: bool) -> Inbound {
        let raw: &[u8] = match message {
            Message::Binary(b) => b,
            Message::Text(t) => t.as_bytes(),
            Message::Close(_) => return Inbound::End,
            _ => return Inbound::Skip,
        };
        match raw {
            [] => Inbound::Skip,
            [255, channel] if v5 => Inbound::Close(*channel),
            [channel, data @ ..] => match self {
                Self::Binary => Inbound::Data(*channel, data.to_vec()),
                Self::Base64 => match STANDARD.decode(data) {
                    Ok(data) => Inbound::Data(channel.wrapping_sub(b'0'), data),
                    Err(_) => Inbound::Skip,
                },
            },
        }
    }
}

/// A normal close (1000), as x/net/websocket sends: without a status code client-go
/// reports an abnormal closure.
pub(super) fn normal_close() -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}

// === exec and attach ===

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;

/// Runs one exec/attach session on an accepted WebSocket.
pub(super) async fn session(ws: Ws, protocol: String, opts: Options, program: Program, pod: Pod) {
    let codec = Codec::of(&protocol);
    let version = protocol.split('.').next().unwrap_or_default().to_owned();
    let v5 = version == "v5";
    // Pre-v4 protocols have no resize channel.
    let resizable = v5 || version == "v4";
    let (mut sink, mut stream) = ws.split();
    // "Send an empty message to the lowest writable channel to notify the client the
    // connection is established" (kubelet and translator alike).
    let hello = if opts.stdout {
        STDOUT
    } else if opts.stderr {
        STDERR
    } else {
        ERROR
    };
    if sink.send(codec.frame(hello, &[])).await.is_err() {
        return;
    }
    let (stdin_tx, stdin_rx) = mpsc::unbounded_channel();
    let (size_tx, size_rx) = watch::channel(None);
    let (out, mut out_rx) = Output::new(opts.tty);
    let io = Io {
        stdin: opts.stdin.then_some(stdin_rx),
        out,
        size: size_rx,
    };
    let proc_pod = pod.clone();
    let proc_program = program.clone();
    let mut process =
        tokio::spawn(async move { process::run(&proc_program, &proc_pod, opts.tty, io).await });
    let mut reader = tokio::spawn(async move {
        let mut stdin = Some(stdin_tx);
        let mut resize = ResizeDecoder::default();
        while let Some(Ok(message)) = stream.next().await {
            match codec.parse(&message, v5) {
                Inbound::Data(STDIN, data) => {
                    if let Some(tx) = &stdin {
                        let _ = tx.send(data.into());
                    }
                }
                Inbound::Data(RESIZE, data) if resizable => {
                    if let Some(size) = resize.push(&data) {
                        let _ = size_tx.send(Some(size));
                    }
                }
                Inbound::Close(STDIN) => stdin = None,
                Inbound::End => break,
                _ => {}
            }
        }
    });
    loop {
        tokio::select! {
            out = out_rx.recv() => {
                let Some((fd, data)) = out else { break };
                let channel = if fd == Fd::Stdout { STDOUT } else { STDERR };
                let wanted = if channel == STDOUT { opts.stdout } else { opts.stderr };
                if wanted && sink.send(codec.frame(channel, &data)).await.is_err() {
                    process.abort();
                    reader.abort();
                    return;
                }
            }
            _ = &mut reader => {
                // The client went away: so does the session.
                process.abort();
                return;
            }
        }
    }
    let exit = (&mut process).await.unwrap_or(process::Exit::Code(137));
    let command = match &program {
        Program::Exec(argv) => argv.clone(),
        Program::Attach => Vec::new(),
    };
    let kubelet = exit_status::kubelet(&exit, &command);
    let bytes = match version.as_str() {
        "v5" if codec == Codec::Binary => exit_status::translated(&kubelet).to_json(),
        "v5" | "v4" => kubelet.to_json(),
        _ => kubelet.to_text(),
    };
    if !bytes.is_empty() {
        let _ = sink.send(codec.frame(ERROR, &bytes)).await;
    }
    let _ = sink.send(normal_close()).await;
    let _ = sink.close().await;
    reader.abort();
}
