//! [`LocalDir`]'s one-pass read of a session gives what `kgate sessions show` and
//! `replay` read in three passes ([`sessions::load_session`]), for each session of a
//! log with two users on one connection, a stream each, and another connection.

use std::time::Duration;

use super::*;
use crate::record::{
    event::{self, Event},
    log::{Limits, Log},
    stream::{Channel, Frame, StreamChunk, StreamEnd},
};

const CONN: &str = "c0ffee000001aaaabbbbccccdddd0001";
const OTHER: &str = "0ddba11000020000000000000000ffff";

fn event(audit_id: &str, conn: &str, user: &str, stage: &str, subresource: &str) -> Event {
    let mut e = Event {
        kind: "Event".into(),
        api_version: event::API_VERSION.into(),
        level: event::LEVEL_METADATA.into(),
        audit_id: audit_id.into(),
        stage: stage.into(),
        request_uri: "/api/v1/namespaces/demo/pods/web".into(),
        verb: "get".into(),
        request_received_timestamp: "2026-01-02T03:04:05.000001Z".into(),
        stage_timestamp: "2026-01-02T03:04:05.000900Z".into(),
        object_ref: Some(event::ObjectRef {
            resource: "pods".into(),
            namespace: "demo".into(),
            name: "web".into(),
            subresource: subresource.into(),
            ..event::ObjectRef::default()
        }),
        ..Event::default()
    };
    e.user.username = user.into();
    e.annotations.insert(event::CONNECTION.into(), conn.into());
    e
}

fn chunk(audit_id: &str, text: &str) -> StreamChunk {
    StreamChunk {
        kind: stream::KIND.into(),
        audit_id: audit_id.into(),
        subresource: "exec".into(),
        transport: "websocket".into(),
        started: "2026-01-02T03:04:05.000001Z".into(),
        frames: vec![Frame::Data {
            t: 10,
            ch: Channel::Stdout,
            data: text.as_bytes().to_vec(),
        }],
        end: Some(StreamEnd::default()),
        ..StreamChunk::default()
    }
}

#[test]
fn one_pass_reads_what_load_session_reads() {
    let dir = std::env::temp_dir().join(format!("kgate-console-source-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    {
        let limits = Limits {
            segment_bytes: 4096,
            max_bytes: 1 << 30,
            max_age: Duration::from_secs(86400),
        };
        let (mut log, _) = Log::open(&dir, limits).unwrap();
        let records: Vec<Vec<u8>> = vec![
            serde_json::to_vec(&event("a1", CONN, "alice", event::STAGE_RECEIVED, "")).unwrap(),
            serde_json::to_vec(&event("b1", CONN, "bob", event::STAGE_COMPLETE, "")).unwrap(),
            serde_json::to_vec(&event("a1", CONN, "alice", event::STAGE_COMPLETE, "")).unwrap(),
            serde_json::to_vec(&event("a2", CONN, "alice", event::STAGE_COMPLETE, "exec")).unwrap(),
            serde_json::to_vec(&chunk("a2", "alice's output")).unwrap(),
            serde_json::to_vec(&event("b2", CONN, "bob", event::STAGE_COMPLETE, "exec")).unwrap(),
            serde_json::to_vec(&chunk("b2", "bob's output")).unwrap(),
            serde_json::to_vec(&event("c1", OTHER, "carol", event::STAGE_COMPLETE, "exec"))
                .unwrap(),
            // Mentions alice's connection in a field, but is carol's.
            {
                let mut e = event("c2", OTHER, "carol", event::STAGE_COMPLETE, "");
                e.request_uri = format!("/api/v1/namespaces/demo/pods?watch={CONN}");
                serde_json::to_vec(&e).unwrap()
            },
            serde_json::to_vec(&chunk("c1", "carol's output")).unwrap(),
        ];
        for record in records {
            let mut buf = Vec::new();
            crate::record::log::frame(&record, &mut buf);
            log.append(&buf, 1).unwrap();
        }
        log.sync().unwrap();
    }
    let source = LocalDir::new(dir.clone(), "node-1".into());
    for (id, user, output) in [
        ("c0ffee000001", "alice", "alice's output"),
        ("c0ffee000001.2", "bob", "bob's output"),
        ("0ddba1100002", "carol", "carol's output"),
        ("0ddba", "carol", "carol's output"),
    ] {
        let (mine, my_recordings) = source.load(id).unwrap();
        let (theirs, their_recordings, _) = sessions::load_session(&dir, id).unwrap();
        assert_eq!(mine.user, user, "{id}");
        assert_eq!(mine.id, theirs.id, "{id}");
        assert_eq!(mine.events, theirs.events, "{id}");
        assert_eq!(mine.requests, theirs.requests, "{id}");
        assert_eq!(
            serde_json::to_value(&mine.streams).unwrap(),
            serde_json::to_value(&theirs.streams).unwrap(),
            "{id}"
        );
        assert_eq!(my_recordings.len(), 1, "{id}");
        assert_eq!(
            serde_json::to_value(&my_recordings).unwrap(),
            serde_json::to_value(&their_recordings).unwrap(),
            "{id}"
        );
        let rec = sessions::pick_stream(&mine, &my_recordings, None).unwrap();
        let mut cast = Vec::new();
        replay::asciicast(rec, &mut cast).unwrap();
        assert!(String::from_utf8_lossy(&cast).contains(output), "{id}");
    }
    // The same errors: an unknown ID, an ambiguous prefix.
    assert!(matches!(
        source.load("ffff"),
        Err(SourceError::NotFound(SessionsError::NotFound(_)))
    ));
    assert!(matches!(
        source.load("c0ffee"),
        Err(SourceError::NotFound(SessionsError::Ambiguous(..)))
    ));
    let _ = std::fs::remove_dir_all(&dir);
}
