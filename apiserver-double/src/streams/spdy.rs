//! The server side of a SPDY/3.1 connection as the kubelet runs it (apimachinery's
//! `httpstream/spdy` over moby/spdystream): the `Upgrade: SPDY/3.1` handshake with
//! `X-Stream-Protocol-Version` negotiation, client-opened streams handed to the
//! caller with their headers, SYN_REPLY/DATA/FIN/RST_STREAM writes in one ordered
//! queue, client PINGs echoed, and the kubelet's close: RST_STREAM (CANCEL) for every
//! accepted stream, then GOAWAY, then the connection closes.
//!
//! Not here: server-initiated streams and pings, flow control (spdystream neither sends
//! nor honours WINDOW_UPDATE), idle timeouts.
//!
//! Deliberately independent of kgate's SPDY reader (its stream recorder): an independent
//! implementation is what makes the recording tests a cross-check of both.

mod dictionary;
mod frame;

use std::collections::HashMap;

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use hyper::upgrade::OnUpgrade;
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    sync::{mpsc, watch},
};

use self::frame::{CANCEL, Encoder, Frame, Headers, MAX_DATA, Reader};
use super::{Body, Req};

pub(super) const PROTOCOL_HEADER: &str = "x-stream-protocol-version";

/// An accepted SPDY upgrade: the negotiated protocol and the connection to come.
pub(super) struct Accepted {
    pub protocol: String,
    upgrade: OnUpgrade,
}

/// `httpstream.Handshake`: the first of the client's `X-Stream-Protocol-Version`
/// values (one per header line; Go does not split them) that the server supports.
pub(super) fn negotiate(
    client: &[String],
    req: &mut Req,
    server: &[&'static str],
) -> Result<Accepted, hyper::Response<Body>> {
    if client.is_empty() {
        return Err(super::plain(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: X-Stream-Protocol-Version is required",
        ));
    }
    let Some(protocol) = client.iter().find(|p| server.contains(&p.as_str())) else {
        let mut response = super::plain(
            StatusCode::FORBIDDEN,
            &format!(
                "unable to upgrade: unable to negotiate protocol: client supports [{}], server accepts [{}]",
                client.join(" "),
                server.join(" ")
            ),
        );
        for p in server {
            response.headers_mut().append(
                "x-accepted-stream-protocol-versions",
                HeaderValue::from_static(p),
            );
        }
        return Err(response);
    };
    let Some(upgrade) = req.upgrade.take() else {
        return Err(super::upgrade_required());
    };
    Ok(Accepted {
        protocol: protocol.clone(),
        upgrade,
    })
}

/// Every `X-Stream-Protocol-Version` header line.
pub(super) fn client_protocols(req: &Req) -> Vec<String> {
    req.headers
        .get_all(PROTOCOL_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_owned)
        .collect()
}

impl Accepted {
    pub(super) fn switching(&self) -> hyper::Response<Body> {
        let mut response = hyper::Response::new(super::super::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = response.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        h.insert(
            PROTOCOL_HEADER,
            HeaderValue::from_str(&self.protocol).expect("negotiated from a header value"),
        );
        response
    }

    /// The connection without the SPDY answer (the tunnel answers as a WebSocket).
    pub(super) fn into_upgrade(self) -> OnUpgrade {
        self.upgrade
    }

    pub(super) async fn open(self) -> Option<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>> {
        Some(hyper_util::rt::TokioIo::new(self.upgrade.await.ok()?))
    }
}

/// A stream the client opened.
pub(super) struct Stream {
    pub id: u32,
    headers: Headers,
    /// Its data; ends at the client's FIN or RST_STREAM, or when the connection goes.
    pub data: mpsc::UnboundedReceiver<Bytes>,
}

impl Stream {
    /// The first value of a header (names are lower-case on the wire).
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.split('\0').next().unwrap_or_default())
    }
}

enum Out {
    Frame(Frame),
    Close,
}

/// The write side of a connection; cheap to clone.
#[derive(Clone)]
pub(super) struct Conn {
    out: mpsc::UnboundedSender<Out>,
    gone: watch::Receiver<bool>,
}

impl Conn {
    pub(super) fn reply(&self, id: u32) {
        self.frame(Frame::SynReply {
            id,
            fin: false,
            headers: Vec::new(),
        });
    }

    /// Writes `data` (split at the frame size limit); `fin` half-closes the stream.
    pub(super) fn data(&self, id: u32, data: Bytes, fin: bool) {
        let mut rest = data;
        while rest.len() > MAX_DATA {
            self.frame(Frame::Data {
                id,
                fin: false,
                data: rest.split_to(MAX_DATA),
            });
        }
        self.frame(Frame::Data {
            id,
            fin,
            data: rest,
        });
    }

    pub(super) fn reset(&self, id: u32) {
        self.frame(Frame::RstStream { id, status: CANCEL });
    }

    /// The kubelet's `conn.Close()`: reset every accepted stream, GOAWAY, hang up.
    pub(super) fn close(&self) {
        let _ = self.out.send(Out::Close);
    }

    /// Resolves once the client has hung up (or sent GOAWAY).
    pub(super) async fn gone(&self) {
        let mut gone = self.gone.clone();
        let _ = gone.wait_for(|g| *g).await;
    }

    fn frame(&self, frame: Frame) {
        let _ = self.out.send(Out::Frame(frame));
    }
}

/// Serves SPDY on `io`: returns the write handle and the client's streams as they open.
pub(super) fn serve<IO>(io: IO) -> (Conn, mpsc::UnboundedReceiver<Stream>)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, write) = tokio::io::split(io);
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let (gone_tx, gone_rx) = watch::channel(false);
    let (streams_tx, streams_rx) = mpsc::unbounded_channel();
    let pings = out_tx.downgrade();
    tokio::spawn(async move {
        let (last_tx, last_rx) = watch::channel(0u32);
        let reader = tokio::spawn(async move {
            read_loop(Reader::new(read), &streams_tx, &pings, &last_tx).await;
            let _ = gone_tx.send(true);
        });
        write_loop(write, out_rx, &last_rx).await;
        reader.abort();
    });
    (
        Conn {
            out: out_tx,
            gone: gone_rx,
        },
        streams_rx,
    )
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut reader: Reader<R>,
    streams_tx: &mpsc::UnboundedSender<Stream>,
    pings: &mpsc::WeakUnboundedSender<Out>,
    last: &watch::Sender<u32>,
) {
    let mut open: HashMap<u32, mpsc::UnboundedSender<Bytes>> = HashMap::new();
    while let Ok(Some(frame)) = reader.next().await {
        match frame {
            Frame::SynStream { id, fin, headers } => {
                last.send_modify(|l| *l = (*l).max(id));
                let (tx, data) = mpsc::unbounded_channel();
                if !fin {
                    open.insert(id, tx);
                }
                let _ = streams_tx.send(Stream { id, headers, data });
            }
            Frame::Data { id, fin, data } => {
                if let Some(tx) = open.get(&id)
                    && !data.is_empty()
                {
                    let _ = tx.send(data);
                }
                if fin {
                    open.remove(&id);
                }
            }
            Frame::RstStream { id, .. } => {
                open.remove(&id);
            }
            // Pings the client started have odd ids; echo them as spdystream does.
            Frame::Ping(id) if id % 2 == 1 => {
                if let Some(out) = pings.upgrade() {
                    let _ = out.send(Out::Frame(Frame::Ping(id)));
                }
            }
            Frame::GoAway { .. } => break,
            _ => {}
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut write: W,
    mut out: mpsc::UnboundedReceiver<Out>,
    last: &watch::Receiver<u32>,
) {
    let mut encoder = Encoder::default();
    let mut accepted = Vec::new();
    while let Some(item) = out.recv().await {
        let frames = match item {
            Out::Frame(frame) => {
                if let Frame::SynReply { id, .. } = frame {
                    accepted.push(id);
                }
                vec![frame]
            }
            Out::Close => {
                let mut frames: Vec<Frame> = accepted
                    .iter()
                    .map(|&id| Frame::RstStream { id, status: CANCEL })
                    .collect();
                frames.push(Frame::GoAway {
                    last: *last.borrow(),
                    status: 0,
                });
                for frame in &frames {
                    if write.write_all(&encoder.encode(frame)).await.is_err() {
                        return;
                    }
                }
                let _ = write.flush().await;
                break;
            }
        };
        for frame in &frames {
            // One write per frame: through the WebSocket tunnel each becomes a message.
            if write.write_all(&encoder.encode(frame)).await.is_err()
                || write.flush().await.is_err()
            {
                return;
            }
        }
    }
    let _ = write.shutdown().await;
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::{frame::Encoder, *};

    #[tokio::test]
    async fn a_session_as_spdystream_sees_it() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let (conn, mut incoming) = serve(server);
        let (read, mut write) = tokio::io::split(client);
        let (mut enc, mut rx) = (Encoder::default(), Reader::new(read));
        let mut send = async |frame: Frame| write.write_all(&enc.encode(&frame)).await.unwrap();
        send(Frame::SynStream {
            id: 1,
            fin: false,
            headers: vec![("streamtype".into(), "stdin".into())],
        })
        .await;
        let mut stream = incoming.recv().await.unwrap();
        assert_eq!((stream.id, stream.header("streamType")), (1, Some("stdin")));
        conn.reply(1);
        let reply = rx.next().await.unwrap().unwrap();
        assert!(matches!(
            reply,
            Frame::SynReply {
                id: 1,
                fin: false,
                ..
            }
        ));
        // A client ping comes straight back.
        send(Frame::Ping(5)).await;
        assert_eq!(rx.next().await.unwrap(), Some(Frame::Ping(5)));
        send(Frame::Data {
            id: 1,
            fin: true,
            data: Bytes::from_static(b"in"),
        })
        .await;
        assert_eq!(stream.data.recv().await.as_deref(), Some(&b"in"[..]));
        assert_eq!(stream.data.recv().await, None);
        conn.data(1, Bytes::from_static(b"out"), true);
        conn.close();
        let expected = [
            Frame::Data {
                id: 1,
                fin: true,
                data: Bytes::from_static(b"out"),
            },
            Frame::RstStream {
                id: 1,
                status: CANCEL,
            },
            Frame::GoAway { last: 1, status: 0 },
        ];
        for frame in expected {
            assert_eq!(rx.next().await.unwrap(), Some(frame));
        }
        assert_eq!(rx.next().await.unwrap(), None);
    }
}
