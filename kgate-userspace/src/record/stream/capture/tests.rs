use std::{sync::Arc, time::Duration};

use http::{HeaderMap, HeaderValue};

use super::*;
use crate::record::{
    log::{self, Limits, Log},
    replay::{self, Recording},
    stream::{Channel, spdy::tests::Encoder, websocket::tests::frame},
    writer::{Sinks, Writer},
};

fn open_sink(dir: &std::path::Path) -> (Sink, Counter) {
    let limits = Limits {
        segment_bytes: 64 << 20,
        max_bytes: 1 << 30,
        max_age: Duration::from_secs(3600),
    };
    let (log, _) = Log::open(dir, limits).unwrap();
    let sinks = Sinks {
        log: Some(log),
        stdout: false,
        committed: None,
    };
    let writer =
        Writer::spawn(sinks, 1024, Some(Duration::from_millis(5)), Arc::default()).unwrap();
    let failures = Counter::default();
    (Sink::new(writer).counting(failures.clone()), failures)
}

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                http::HeaderName::from_static(k),
                HeaderValue::from_static(v),
            )
        })
        .collect()
}

/// The recordings in `dir` once one of them has ended.
fn recorded(dir: &std::path::Path) -> Vec<Recording> {
    for _ in 0..200 {
        let (records, _) = log::read_dir(dir).unwrap();
        let chunks: Vec<StreamChunk> = records
            .iter()
            .map(|r| serde_json::from_slice(r).unwrap())
            .collect();
        let recs = replay::assemble(chunks);
        if recs.iter().any(|r| r.end.is_some()) {
            return recs;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no finished recording in {}", dir.display());
}

fn scratch(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kgate-capture-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn data(rec: &Recording, want: Channel) -> Vec<u8> {
    rec.frames
        .iter()
        .filter_map(|f| match f {
            Frame::Data { ch, data, .. } if *ch == want => Some(data.as_slice()),
            _ => None,
        })
        .flatten()
        .copied()
        .collect()
}

#[test]
fn websocket_exec_is_captured_in_chunks() {
    let dir = scratch("ws");
    let (sink, failures) = open_sink(&dir);
    let h = headers(&[
        ("upgrade", "websocket"),
        ("sec-websocket-protocol", "v5.channel.k8s.io"),
    ]);
    let mut capture = Capture::start(sink, "audit-1", "exec", &h);
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
    let mut down = vec![1];
    down.extend_from_slice(&big);
    let down = frame(2, true, &down, None);
    // Pieces the size of the tap's reads.
    for piece in down.chunks(16 * 1024) {
        capture.feed(Dir::Down, piece);
    }
    capture.feed(Dir::Up, &frame(2, true, b"\x00input", Some([1, 2, 3, 4])));
    capture.feed(
        Dir::Up,
        &frame(
            2,
            true,
            br#"{"Width":100,"Height":30}"#
                .iter()
                .fold(vec![4], |mut v, b| {
                    v.push(*b);
                    v
                })
                .as_slice(),
            Some([9, 9, 9, 9]),
        ),
    );
    capture.feed(Dir::Up, &frame(2, true, &[255, 0], Some([1, 2, 3, 4])));
    capture.finish(10, 20, None);
    let recs = recorded(&dir);
    assert_eq!(recs.len(), 1);
    let rec = &recs[0];
    assert_eq!(
        (rec.transport.as_str(), rec.protocol.as_str()),
        ("websocket", "v5.channel.k8s.io")
    );
    assert_eq!(data(rec, Channel::Stdout), big);
    assert_eq!(data(rec, Channel::Stdin), b"input");
    assert_eq!(rec.first_size(), Some((100, 30)));
    assert!(rec.frames.iter().any(|f| matches!(
        f,
        Frame::Close {
            ch: Channel::Stdin,
            ..
        }
    )));
    assert_eq!(
        rec.end.as_ref().map(|e| (e.bytes_in, e.bytes_out)),
        Some((10, 20))
    );
    assert!(rec.missing_chunks.is_empty() && rec.capture_error.is_none());
    // 200 kB of output do not fit one chunk.
    let (records, _) = log::read_dir(&dir).unwrap();
    assert!(records.len() >= 3, "{} chunks", records.len());
    assert_eq!(failures.get(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn spdy_exec_and_port_forward_are_captured() {
    let dir = scratch("spdy");
    let (sink, _) = open_sink(&dir);
    let h = headers(&[
        ("upgrade", "SPDY/3.1"),
        ("x-stream-protocol-version", "v4.channel.k8s.io"),
    ]);
    let mut capture = Capture::start(sink.clone(), "audit-exec", "exec", &h);
    let (mut up, mut down) = (Encoder::default(), Encoder::default());
    capture.feed(
        Dir::Up,
        &up.syn_stream(1, false, &[("streamtype", "stdin")]),
    );
    capture.feed(
        Dir::Up,
        &up.syn_stream(3, false, &[("streamtype", "stdout")]),
    );
    // The client finishes the output stream it never writes: no close of stdout.
    capture.feed(Dir::Up, &Encoder::data(3, true, b""));
    capture.feed(Dir::Down, &down.syn_reply(1, &[]));
    capture.feed(Dir::Up, &Encoder::data(1, true, b"in"));
    capture.feed(Dir::Down, &Encoder::data(3, false, b"out"));
    capture.finish(1, 2, None);
    let recs = recorded(&dir);
    let rec = &recs[0];
    assert_eq!(rec.transport, "spdy");
    assert_eq!(data(rec, Channel::Stdin), b"in");
    assert_eq!(data(rec, Channel::Stdout), b"out");
    let closes: Vec<_> = rec
        .frames
        .iter()
        .filter_map(|f| match f {
            Frame::Close { ch, .. } => Some(*ch),
            _ => None,
        })
        .collect();
    assert_eq!(closes, [Channel::Stdin]);
    let _ = std::fs::remove_dir_all(&dir);

    let dir = scratch("pf");
    let (sink, _) = open_sink(&dir);
    let h = headers(&[
        ("upgrade", "SPDY/3.1"),
        ("x-stream-protocol-version", "portforward.k8s.io"),
    ]);
    let mut capture = Capture::start(sink, "audit-pf", "portforward", &h);
    let mut up = Encoder::default();
    capture.feed(
        Dir::Up,
        &up.syn_stream(1, false, &[("streamtype", "error"), ("port", "80")]),
    );
    capture.feed(
        Dir::Up,
        &up.syn_stream(3, false, &[("streamtype", "data"), ("port", "80")]),
    );
    capture.feed(Dir::Up, &Encoder::data(3, true, b"GET /"));
    capture.feed(Dir::Down, &Encoder::data(3, true, b"HTTP/1.1 200 OK"));
    capture.finish(0, 0, None);
    let rec = &recorded(&dir)[0];
    let frames = serde_json::to_value(&rec.frames).unwrap();
    let frames = frames.as_array().unwrap();
    assert!(frames.iter().all(|f| f.get("data").is_none()), "{frames:?}");
    let closed: Vec<_> = rec
        .frames
        .iter()
        .filter_map(|f| match f {
            Frame::Closed {
                stream,
                bytes_in,
                bytes_out,
                ..
            } => Some((*stream, *bytes_in, *bytes_out)),
            _ => None,
        })
        .collect();
    // Stream 3 closed when both sides had finished; stream 1 when the stream ended.
    assert_eq!(closed, [(3, 5, 15), (1, 0, 0)]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn websocket_port_forward_streams_carry_their_port() {
    // The kubelet's channel protocol: per port a data and an error channel, each
    // opened by the server with the port in two little-endian bytes.
    let dir = scratch("ws-pf");
    let (sink, _) = open_sink(&dir);
    let h = headers(&[
        ("upgrade", "websocket"),
        ("sec-websocket-protocol", "v4.channel.k8s.io"),
    ]);
    let mut capture = Capture::start(sink, "audit-wspf", "portforward", &h);
    let port = 8080u16.to_le_bytes();
    let down: Vec<u8> = [
        frame(2, true, &[0, port[0], port[1]], None),
        frame(2, false, &[1, port[0]], None),
    ]
    .concat();
    // The second channel's port in two frames of one message.
    capture.feed(Dir::Down, &down);
    capture.feed(Dir::Down, &frame(0, true, &[port[1]], None)[..]);
    capture.feed(Dir::Up, &frame(2, true, b"\x00hello", Some([5, 6, 7, 8])));
    capture.feed(Dir::Down, &frame(2, true, b"\x00hello!", None));
    capture.finish(0, 0, None);
    let rec = &recorded(&dir)[0];
    assert_eq!(
        rec.frames,
        [
            Frame::Open {
                t: rec.frames[0].t(),
                stream: 0,
                kind: "data".into(),
                port: "8080".into()
            },
            Frame::Open {
                t: rec.frames[1].t(),
                stream: 1,
                kind: "error".into(),
                port: "8080".into()
            },
            Frame::Closed {
                t: rec.frames[2].t(),
                stream: 0,
                bytes_in: 5,
                bytes_out: 6
            },
            Frame::Closed {
                t: rec.frames[3].t(),
                stream: 1,
                bytes_in: 0,
                bytes_out: 0
            },
        ]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_undecodable_stream_is_reported_and_counted() {
    for (h, why) in [
        (
            headers(&[
                ("upgrade", "websocket"),
                ("sec-websocket-protocol", "x.example"),
            ]),
            "subprotocol",
        ),
        (headers(&[("upgrade", "h2c")]), "unknown upgrade"),
    ] {
        let dir = scratch("bad");
        let (sink, failures) = open_sink(&dir);
        let mut capture = Capture::start(sink, "audit-x", "exec", &h);
        capture.feed(Dir::Up, b"anything");
        capture.finish(8, 0, None);
        let rec = &recorded(&dir)[0];
        assert!(
            rec.capture_error.as_deref().unwrap().contains(why),
            "{rec:?}"
        );
        assert!(rec.frames.is_empty());
        assert_eq!(failures.get(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
    // Mid-stream: what came before the damage is kept.
    let dir = scratch("mid");
    let (sink, failures) = open_sink(&dir);
    let h = headers(&[
        ("upgrade", "websocket"),
        ("sec-websocket-protocol", "v4.channel.k8s.io"),
    ]);
    let mut capture = Capture::start(sink, "audit-y", "attach", &h);
    capture.feed(Dir::Down, &frame(2, true, b"\x01before", None));
    let mut rsv = frame(2, true, b"\x01after", None);
    rsv[0] |= 0x40;
    capture.feed(Dir::Down, &rsv);
    capture.feed(Dir::Down, &frame(2, true, b"\x01ignored", None));
    capture.finish(0, 0, None);
    let rec = &recorded(&dir)[0];
    assert_eq!(data(rec, Channel::Stdout), b"before");
    assert!(rec.capture_error.as_deref().unwrap().contains("RSV"));
    assert_eq!(failures.get(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn channel_protocol_names() {
    for p in [
        "",
        "channel.k8s.io",
        "base64.channel.k8s.io",
        "v4.channel.k8s.io",
        "v5.base64.channel.k8s.io",
        "portforward.k8s.io",
    ] {
        assert!(is_channel_protocol(p), "{p}");
    }
    for p in ["v4.example.io", "vx.channel.k8s.io", "chat"] {
        assert!(!is_channel_protocol(p), "{p}");
    }
}
