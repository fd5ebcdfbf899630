use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

use super::*;
use crate::proxy::upgrade::StreamTap;
use crate::record::{
    log::{self, Limits, Log},
    replay,
    stream::{Sink, StreamChunk},
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

/// The record of a stolen token's refusal: the user the token verified as (as an
/// allowed request's record has it), the pod the connection came from, and the pod
/// the token is bound to; `kgate sessions list` finds it by the user and by either pod.
#[test]
fn a_stolen_tokens_refusal_records_its_user_and_both_pods() {
    use crate::{
        identity::{BoundPod, EXTRA_POD_NAME, pods::PodInfo},
        record::sessions::{self, Filter},
    };
    let user = UserInfo {
        username: "system:serviceaccount:ci:deployer".into(),
        uid: "sa-uid-1".into(),
        groups: vec![
            "system:serviceaccounts".into(),
            "system:serviceaccounts:ci".into(),
        ],
        extra: [
            (EXTRA_POD_NAME.to_owned(), vec!["deployer-7d9f".to_owned()]),
            (EXTRA_POD_UID.to_owned(), vec!["uid-a".to_owned()]),
        ]
        .into(),
    };
    let from = Arc::new(PodInfo {
        namespace: "ci".into(),
        name: "web-0".into(),
        uid: "uid-b".into(),
        service_account: "web".into(),
        labels: Default::default(),
        containers: vec![("app".into(), None)],
    });
    let refusal = Unidentified::StolenToken {
        user: Arc::new(user.clone()),
        token_pod: BoundPod::of(&user).unwrap(),
        workload: Workload::Pod {
            pod: from,
            container: Some("app".into()),
        },
    };
    let conn = Connection {
        peer: ([10, 0, 0, 2], 40000).into(),
        origin: None,
        cgroup: None,
        exe: None,
    };
    let info = RequestInfo {
        verb: "list".into(),
        ..RequestInfo::default()
    };
    let req = http::Request::get("/api/v1/namespaces/ci/secrets")
        .body(())
        .unwrap();
    let pending = Pending::new(&Arc::from("c0ffee"), conn.peer, &req);
    let status = refusal.status();
    let outcome = Outcome {
        status: StatusCode::FORBIDDEN,
        latency: Duration::from_millis(1),
        refused: Some(&status),
        approval: None,
    };
    let subject = Subject {
        conn: &conn,
        identity: None,
        refusal: Some(&refusal),
        info: &info,
        decision: None,
    };
    let event = pending.event(subject, event::STAGE_COMPLETE, Some(&outcome));

    assert_eq!(event.user, user, "the verified user, uid, groups and extra");
    let annotation = |key| event.annotation(key);
    assert_eq!(annotation(event::WORKLOAD), Some("pod ci/web-0/app"));
    assert_eq!(annotation(event::POD), Some("ci/web-0"));
    assert_eq!(annotation(event::CONTAINER), Some("app"));
    assert_eq!(annotation(event::TOKEN_POD), Some("ci/deployer-7d9f"));
    assert_eq!(annotation(event::TOKEN_POD_UID), Some("uid-a"));
    assert_eq!(annotation(event::BINDING), Some("refused"));
    let recorded = event.response_status.as_ref().unwrap();
    assert_eq!(recorded.code, 403);
    assert!(
        recorded
            .message
            .contains("token bound to pod ci/deployer-7d9f (uid-a) used from pod ci/web-0 (uid-b)"),
        "{}",
        recorded.message
    );

    // A refusal before any token verified names no one, as before.
    let unverified = Unidentified::Unverified(Status::unauthorized("kgate: no token"));
    let anonymous = pending.event(
        Subject {
            refusal: Some(&unverified),
            ..subject
        },
        event::STAGE_COMPLETE,
        None,
    );
    assert_eq!(anonymous.user, UserInfo::default());
    assert_eq!(anonymous.annotation(event::WORKLOAD), None);
    assert_eq!(anonymous.annotation(event::TOKEN_POD), None);

    // `kgate sessions list --user/--pod`.
    let all = sessions::sessions(vec![event]);
    let select = |user: Option<&str>, pod: Option<&str>| {
        let filter = Filter {
            user: user.map(wildmatch::WildMatch::new),
            pod: pod.map(wildmatch::WildMatch::new),
            since: None,
        };
        sessions::select(all.clone(), &filter).len()
    };
    assert_eq!(select(Some("system:serviceaccount:ci:deployer"), None), 1);
    assert_eq!(select(None, Some("ci/web-0")), 1, "the connection's pod");
    assert_eq!(select(None, Some("ci/deployer-*")), 1, "the token's pod");
    assert_eq!(select(None, Some("ci/other")), 0);
    assert_eq!(select(Some("system:serviceaccount:ci:web"), None), 0);
}
