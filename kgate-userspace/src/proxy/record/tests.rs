use std::time::Duration;

use http::HeaderValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

use super::*;
use crate::record::{
    log::{self, Limits, Log},
    replay,
    stream::StreamChunk,
    writer::{Sinks, Writer},
};

fn sink(dir: &std::path::Path) -> Sink {
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
    Sink::new(Writer::spawn(sinks, 64, Some(Duration::from_millis(5)), Arc::default()).unwrap())
}

/// Bytes that no decoder can read cross the tap unchanged both ways, and the record
/// says why capture stopped.
#[tokio::test]
async fn an_undecodable_stream_is_relayed_unchanged() {
    let dir = std::env::temp_dir().join(format!("kgate-tap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut headers = HeaderMap::new();
    headers.insert("upgrade", HeaderValue::from_static("websocket"));
    headers.insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("v5.channel.k8s.io"),
    );
    let mut tap = StreamTap::new("exec test".into());
    tap.capture(sink(&dir), "audit-tap", "exec");
    let tap = tap.negotiated(&headers);
    let (client, mut client_far) = duplex(1024);
    let (upstream, mut upstream_far) = duplex(1024);
    let relay = tokio::spawn(tap.relay(client, upstream));
    // RSV bits set: a compressed frame the decoder refuses.
    let up: Vec<u8> = (0..50_000u32).map(|i| 0xc1 ^ (i % 7) as u8).collect();
    let down: Vec<u8> = (0..50_000u32).map(|i| (i % 13) as u8).collect();
    let (sent_up, sent_down) = (up.clone(), down.clone());
    let writer = tokio::spawn(async move {
        client_far.write_all(&sent_up).await.unwrap();
        client_far.shutdown().await.unwrap();
        let mut got = Vec::new();
        client_far.read_to_end(&mut got).await.unwrap();
        got
    });
    let mut got_up = Vec::new();
    let mut buf = vec![0; 4096];
    loop {
        let n = upstream_far.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got_up.extend_from_slice(&buf[..n]);
    }
    upstream_far.write_all(&sent_down).await.unwrap();
    upstream_far.shutdown().await.unwrap();
    let got_down = writer.await.unwrap();
    assert!(got_up == up, "client to upstream changed");
    assert!(got_down == down, "upstream to client changed");
    let (bytes_in, bytes_out) = relay.await.unwrap().unwrap();
    assert_eq!((bytes_in, bytes_out), (50_000, 50_000));

    let mut tries = 0;
    let rec = loop {
        tries += 1;
        assert!(tries < 500, "the stream's last chunk was never written");
        let (records, _) = log::read_dir(&dir).unwrap();
        let chunks: Vec<StreamChunk> = records
            .iter()
            .map(|r| serde_json::from_slice(r).unwrap())
            .collect();
        if let Some(rec) = replay::assemble(chunks).pop()
            && rec.end.is_some()
        {
            break rec;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(rec.capture_error.unwrap().contains("RSV"));
    assert_eq!(
        rec.end.map(|e| (e.bytes_in, e.bytes_out)),
        Some((50_000, 50_000))
    );
    let _ = std::fs::remove_dir_all(&dir);
}
