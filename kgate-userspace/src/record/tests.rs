use std::{
    fs::{self, OpenOptions},
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use super::{
    event::{self, Event, ResponseStatus},
    log::{self, Limits, Log, OpenError},
    sessions,
    stats::Stats,
    writer::{Sinks, Writer},
};

/// A scratch directory for one test, removed when dropped (also used by the
/// reader's tests).
pub(super) struct Dir(pub(super) PathBuf);

impl Dir {
    pub(super) fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "kgate-record-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A writer thread over `log` with no stdout copy.
fn writer(
    log: Option<Log>,
    committed: Option<tokio::sync::watch::Sender<log::Position>>,
    capacity: usize,
    flush: Option<Duration>,
    stats: Arc<Stats>,
) -> Writer {
    let sinks = Sinks {
        log,
        stdout: false,
        committed,
    };
    Writer::spawn(sinks, capacity, flush, stats).unwrap()
}

const BIG: Limits = Limits {
    segment_bytes: 1 << 20,
    max_bytes: 1 << 30,
    max_age: Duration::from_secs(3600),
};

fn append(log: &mut Log, payloads: &[&[u8]]) {
    for p in payloads {
        let mut buf = Vec::new();
        log::frame(p, &mut buf);
        log.append(&buf, 1).unwrap();
    }
    log.sync().unwrap();
}

fn all(dir: &Path) -> Vec<Vec<u8>> {
    let (records, damage) = log::read_dir(dir).unwrap();
    assert!(damage.is_empty(), "{damage:?}");
    records
}

fn only_segment(dir: &Path) -> PathBuf {
    let mut files: Vec<_> = log::list_segments(dir)
        .unwrap()
        .into_iter()
        .map(|(_, path)| path)
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files.remove(0)
}

#[test]
fn framing_round_trip() {
    let payloads: [&[u8]; 3] = [b"{}", b"a record", &[0xff; 1000]];
    let mut buf = Vec::new();
    for p in payloads {
        log::frame(p, &mut buf);
    }
    let (records, good, damage) = log::unframe(&buf);
    assert_eq!(records, payloads);
    assert_eq!(good, buf.len());
    assert_eq!(damage, None);
    // Zeros to the end (a reserve, a file extended but never written) are unwritten
    // space: no record, no damage, and the good prefix ends before them.
    let (records, good, damage) = log::unframe(&[0; 16]);
    assert!(records.is_empty());
    assert_eq!((good, damage), (0, None));
    let mut reserved = buf.clone();
    reserved.extend_from_slice(&[0; 3]);
    let (records, good, damage) = log::unframe(&reserved);
    assert_eq!((records.len(), good, damage), (3, buf.len(), None));
    // A zero length with data after it is damage, not an empty record.
    let mut hole = vec![0; 16];
    hole.extend_from_slice(&buf);
    let (records, good, damage) = log::unframe(&hole);
    assert!(records.is_empty());
    assert_eq!((good, damage), (0, Some("invalid record length")));
}

#[test]
fn a_reserve_is_written_over_and_never_read_as_records() {
    let dir = Dir::new("reserve");
    let limits = Limits {
        segment_bytes: 64 << 10,
        ..BIG
    };
    let (mut log, _) = Log::open(&dir.0, limits).unwrap();
    log.reserve(16 << 10);
    let record = |i: usize| format!("record {i:04} {}", "x".repeat(500)).into_bytes();
    let len = |path: &Path| fs::metadata(path).unwrap().len();
    let mut written = 0;
    for i in 0..10 {
        append(&mut log, &[&record(i)]);
        written += (log::HEADER + record(i).len()) as u64;
        log.reserve_ahead().unwrap();
        // Zeros follow the records, at least half the reserve of them.
        let path = only_segment(&dir.0);
        assert!(
            len(&path) >= written + (8 << 10),
            "{} {written}",
            len(&path)
        );
    }
    // Read while the agent writes: the zeros are neither records nor damage.
    let expected: Vec<Vec<u8>> = (0..10).map(record).collect();
    assert_eq!(all(&dir.0), expected);
    // A crash leaves the zeros: the recovery scan cuts them off, reporting nothing.
    let path = only_segment(&dir.0);
    let crashed = fs::read(&path).unwrap();
    log.crash();
    let (log, recovery) = Log::open(&dir.0, limits).unwrap();
    assert_eq!((recovery.records, recovery.damaged.len()), (10, 0));
    assert_eq!(len(&path), written);
    drop(log);
    // A record torn over the zeros is damage, found and cut back to the good prefix.
    let mut torn = crashed.clone();
    let at = usize::try_from(written).unwrap();
    torn[at..at + 20].copy_from_slice(&crashed[..20]);
    fs::write(&path, &torn).unwrap();
    let (mut log, recovery) = Log::open(&dir.0, limits).unwrap();
    let [damage] = recovery.damaged.as_slice() else {
        panic!("one damaged segment expected: {:?}", recovery.damaged)
    };
    assert_eq!((damage.good_bytes, damage.truncated), (written, true));
    assert_eq!(len(&path), written);
    // Rotation: the sealed segment ends at its last record, the new one is reserved.
    log.reserve(16 << 10);
    for i in 10..200 {
        append(&mut log, &[&record(i)]);
        log.reserve_ahead().unwrap();
    }
    let segments = log.segments();
    assert!(segments.len() >= 2, "{segments:?}");
    for sealed in &segments[..segments.len() - 1] {
        let data = fs::read(sealed).unwrap();
        let (records, good, damage) = log::unframe(&data);
        assert_eq!((good, damage), (data.len(), None), "{}", sealed.display());
        assert!(!records.is_empty());
        assert!(data.len() as u64 <= limits.segment_bytes);
    }
    let active = segments.last().unwrap();
    assert!(
        len(active) > log.end().offset,
        "the active segment is reserved"
    );
    // A stopped log ends at its last record too.
    let end = log.end().offset;
    drop(log);
    assert_eq!(len(active), end);
    assert_eq!(all(&dir.0), (0..200).map(record).collect::<Vec<_>>());
}

#[test]
fn log_reopens_and_continues() {
    let dir = Dir::new("reopen");
    let (mut log, recovery) = Log::open(&dir.0, BIG).unwrap();
    assert_eq!((recovery.segments, recovery.records), (0, 0));
    append(&mut log, &[b"one", b"two"]);
    drop(log);
    let (mut log, recovery) = Log::open(&dir.0, BIG).unwrap();
    assert_eq!((recovery.records, recovery.damaged.len()), (2, 0));
    assert_eq!(log.next_seq(), 2);
    append(&mut log, &[b"three"]);
    assert_eq!(
        all(&dir.0),
        [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
    );
}

/// Two agents on one `record.dir` destroyed records: the second's recovery scan cut
/// the first's active segment under it. The directory's lock refuses the second log
/// before it scans or writes anything.
#[tokio::test]
async fn a_second_writer_on_a_held_directory_is_refused_and_the_first_keeps_recording() {
    let dir = Dir::new("held");
    let (mut log, _) = Log::open(&dir.0, BIG).unwrap();
    // Strict mode's zeros ahead: the unwritten tail a second scan would cut off.
    log.reserve(64 << 10);
    log.reserve_ahead().unwrap();
    let stats = Arc::new(Stats::default());
    let first = writer(Some(log), None, 64, None, stats.clone());
    let record = async |i: usize| {
        let ack = first.submit(format!("record {i}").into_bytes(), true);
        ack.unwrap().unwrap().await.unwrap().unwrap();
    };
    for i in 0..10 {
        record(i).await;
    }
    let segment = only_segment(&dir.0);
    let before = fs::read(&segment).unwrap();

    let Err(error) = Log::open(&dir.0, BIG) else {
        panic!("a second log opened a directory another writer holds")
    };
    assert_eq!(
        error.to_string(),
        format!(
            "record.dir {} is in use by another kgate agent (pid {}); \
             two agents must not share a record directory",
            dir.0.display(),
            std::process::id()
        )
    );
    // Nothing of the first's segment changed, the zeros ahead included.
    assert_eq!(fs::read(&segment).unwrap(), before);
    for i in 10..20 {
        record(i).await;
    }
    let expected: Vec<Vec<u8>> = (0..20)
        .map(|i| format!("record {i}").into_bytes())
        .collect();
    assert_eq!(all(&dir.0), expected);

    // The lock goes with its holder: once the writer has stopped, a new log opens.
    drop(first);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    // (The writer thread drops its log once it sees the queue closed.)
    let (mut log, recovery) = loop {
        match Log::open(&dir.0, BIG) {
            Err(OpenError::Locked(_)) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            opened => break opened.unwrap(),
        }
    };
    assert_eq!((recovery.records, recovery.damaged.len()), (20, 0));
    append(&mut log, &[b"after"]);
    assert_eq!(all(&dir.0).len(), 21);
}

#[test]
fn torn_tail_is_truncated_and_reported() {
    let dir = Dir::new("torn");
    let (mut log, _) = Log::open(&dir.0, BIG).unwrap();
    append(&mut log, &[b"first record", b"second record"]);
    drop(log);
    let path = only_segment(&dir.0);
    let full = fs::metadata(&path).unwrap().len();
    // Cut the second record in the middle of its payload.
    let cut = full - 5;
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(cut)
        .unwrap();

    let (mut log, recovery) = Log::open(&dir.0, BIG).unwrap();
    assert_eq!(recovery.records, 1);
    let [damage] = recovery.damaged.as_slice() else {
        panic!("one damaged segment expected: {:?}", recovery.damaged)
    };
    assert_eq!(damage.reason, "torn record");
    assert!(damage.truncated);
    let first_len = (log::HEADER + b"first record".len()) as u64;
    assert_eq!(damage.good_bytes, first_len);
    assert_eq!(damage.bad_bytes, cut - first_len);
    assert_eq!(fs::metadata(&path).unwrap().len(), first_len);
    // Appending continues right after the good prefix.
    append(&mut log, &[b"third"]);
    assert_eq!(all(&dir.0), [b"first record".to_vec(), b"third".to_vec()]);
}

#[test]
fn flipped_byte_is_truncated_and_reported() {
    let dir = Dir::new("flip");
    let (mut log, _) = Log::open(&dir.0, BIG).unwrap();
    append(&mut log, &[b"good", b"will be damaged", b"after it"]);
    drop(log);
    let path = only_segment(&dir.0);
    let mut data = fs::read(&path).unwrap();
    let second_payload = 2 * log::HEADER + b"good".len() + 3;
    data[second_payload] ^= 0x01;
    fs::write(&path, &data).unwrap();

    // The read-only scan reports it and changes nothing.
    let (records, damage) = log::read_dir(&dir.0).unwrap();
    assert_eq!(records, [b"good".to_vec()]);
    assert_eq!(damage.len(), 1);
    assert!(!damage[0].truncated);
    assert_eq!(fs::read(&path).unwrap(), data);

    let (mut log, recovery) = Log::open(&dir.0, BIG).unwrap();
    assert_eq!(recovery.records, 1);
    assert_eq!(recovery.damaged.len(), 1);
    assert_eq!(recovery.damaged[0].reason, "checksum mismatch");
    append(&mut log, &[b"next"]);
    assert_eq!(all(&dir.0), [b"good".to_vec(), b"next".to_vec()]);
}

#[test]
fn segments_rotate_and_retention_deletes_the_oldest() {
    let dir = Dir::new("rotate");
    let payload = [b'x'; 92]; // 100 bytes framed
    let limits = Limits {
        segment_bytes: 250,
        max_bytes: 600,
        max_age: Duration::from_secs(3600),
    };
    let (mut log, _) = Log::open(&dir.0, limits).unwrap();
    for _ in 0..3 {
        append(&mut log, &[&payload]);
    }
    // 2 records per segment: the third started a segment named by its sequence number.
    let names = |dir: &Path| {
        let mut n: Vec<String> = log::list_segments(dir)
            .unwrap()
            .into_iter()
            .map(|(_, p)| p.file_name().unwrap().to_str().unwrap().to_owned())
            .collect();
        n.sort();
        n
    };
    assert_eq!(
        names(&dir.0),
        ["00000000000000000000.log", "00000000000000000002.log"]
    );
    for _ in 0..7 {
        append(&mut log, &[&payload]);
    }
    // 10 records = 1000 bytes written. At rotation the sealed segments keep room for a
    // full active one under max_bytes: whole segments, the newest kept.
    let kept = names(&dir.0);
    let total: u64 = log
        .segments()
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert!(total <= 600, "{total} bytes kept: {kept:?}");
    assert_eq!(
        kept,
        ["00000000000000000006.log", "00000000000000000008.log"]
    );
    assert_eq!(all(&dir.0).len(), 4);
}

#[test]
fn retention_by_age() {
    let dir = Dir::new("age");
    let limits = Limits {
        segment_bytes: 150,
        max_bytes: 1 << 30,
        max_age: Duration::from_secs(3600),
    };
    let (mut log, _) = Log::open(&dir.0, limits).unwrap();
    append(&mut log, &[&[b'a'; 92]]);
    let old = only_segment(&dir.0);
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    append(&mut log, &[&[b'b'; 92]]);
    assert!(!old.exists(), "the expired segment is deleted at rotation");
    assert_eq!(all(&dir.0), [vec![b'b'; 92]]);
}

#[tokio::test]
async fn group_commit_acks_only_after_the_write() {
    let dir = Dir::new("group");
    let (log, _) = Log::open(&dir.0, BIG).unwrap();
    let stats = Arc::new(Stats::default());
    let writer = writer(Some(log), None, 1024, None, stats.clone());
    let acks: Vec<_> = (0..200)
        .map(|i| {
            writer
                .submit(format!("record {i}").into_bytes(), true)
                .unwrap()
                .unwrap()
        })
        .collect();
    for (i, ack) in acks.into_iter().enumerate() {
        ack.await.unwrap().unwrap();
        // Once acknowledged, the record is in the file.
        let records = log::read_dir(&dir.0).unwrap().0;
        assert!(
            records.contains(&format!("record {i}").into_bytes()),
            "record {i} acknowledged but not in the log"
        );
    }
    assert_eq!(stats.written.load(Ordering::Relaxed), 200);
    let syncs = stats.syncs.load(Ordering::Relaxed);
    assert!((1..=200).contains(&syncs), "{syncs} syncs");
}

#[test]
fn oversized_records_are_refused_and_counted() {
    let dir = Dir::new("large");
    let (log, _) = Log::open(&dir.0, BIG).unwrap();
    let stats = Arc::new(Stats::default());
    let writer = writer(Some(log), None, 16, None, stats.clone());
    assert!(
        writer
            .submit(vec![b'x'; log::MAX_RECORD + 1], true)
            .is_err()
    );
    assert_eq!(stats.too_large.load(Ordering::Relaxed), 1);
}

#[test]
fn a_full_queue_is_counted() {
    let stats = Arc::new(Stats::default());
    // No sink that drains fast enough matters: fill a one-slot queue from this thread
    // while the writer is blocked on nothing; count what cannot be queued.
    let writer = writer(None, None, 1, Some(Duration::from_secs(60)), stats.clone());
    let mut refused = 0;
    for _ in 0..10_000 {
        if writer.submit(b"x".to_vec(), false).is_err() {
            refused += 1;
        }
    }
    assert!(refused > 0, "a one-slot queue never filled");
    assert_eq!(stats.dropped.load(Ordering::Relaxed), refused);
}

fn event(audit_id: &str, conn: &str, user: &str, stage: &str, code: Option<u16>) -> Event {
    let mut e = Event {
        kind: "Event".into(),
        api_version: event::API_VERSION.into(),
        level: event::LEVEL_METADATA.into(),
        audit_id: audit_id.into(),
        stage: stage.into(),
        request_uri: "/api/v1/namespaces/demo/pods".into(),
        verb: "list".into(),
        request_received_timestamp: "2026-01-02T03:04:05.000001Z".into(),
        stage_timestamp: "2026-01-02T03:04:05.000900Z".into(),
        object_ref: Some(event::ObjectRef {
            resource: "pods".into(),
            namespace: "demo".into(),
            api_version: "v1".into(),
            ..event::ObjectRef::default()
        }),
        ..Event::default()
    };
    e.user.username = user.into();
    e.annotations.insert(event::CONNECTION.into(), conn.into());
    e.response_status = code.map(|code| ResponseStatus {
        code,
        ..ResponseStatus::default()
    });
    e
}

#[test]
fn sessions_group_by_connection_and_user() {
    let mut refused = event("3", "c1", "alice", event::STAGE_COMPLETE, Some(403));
    refused.response_status.as_mut().unwrap().reason = "Forbidden".into();
    let events = vec![
        event("1", "c1", "alice", event::STAGE_RECEIVED, None),
        event("1", "c1", "alice", event::STAGE_COMPLETE, Some(200)),
        event("2", "c2", "bob", event::STAGE_COMPLETE, Some(200)),
        refused,
        event("4", "c1", "carol", event::STAGE_COMPLETE, Some(200)),
        // The agent died before this one's response: its received record stands.
        event("5", "c2", "bob", event::STAGE_RECEIVED, None),
    ];
    let all = sessions::sessions(events);
    let summary: Vec<_> = all
        .iter()
        .map(|s| (s.id.as_str(), s.user.as_str(), s.requests, s.refused))
        .collect();
    assert_eq!(
        summary,
        [
            ("c1", "alice", 2, 1),
            ("c2", "bob", 2, 0),
            ("c1.2", "carol", 1, 0)
        ]
    );
    let filter = sessions::Filter {
        user: Some(wildmatch::WildMatch::new("b*")),
        ..Default::default()
    };
    assert_eq!(sessions::select(all.clone(), &filter).len(), 1);
    let bob = sessions::find(all.clone(), "c2").unwrap();
    let timeline = crate::cli::sessions::show_timeline(&bob);
    assert!(timeline.contains("pods -n demo"), "{timeline}");
    assert!(timeline.contains("[no response recorded]"), "{timeline}");
    assert!(matches!(
        sessions::find(all.clone(), "c"),
        Err(sessions::SessionsError::Ambiguous(..))
    ));
    assert!(crate::cli::sessions::list_table(&all).contains("alice"));
}

#[test]
fn micro_time_has_microseconds() {
    let ts: jiff::Timestamp = "2026-01-02T03:04:05.1Z".parse().unwrap();
    assert_eq!(event::micro_time(ts), "2026-01-02T03:04:05.100000Z");
}

#[tokio::test]
async fn the_durable_end_is_published_after_each_sync() {
    let dir = Dir::new("committed");
    let (log, _) = Log::open(&dir.0, BIG).unwrap();
    let (tx, mut rx) = tokio::sync::watch::channel(log.end());
    assert_eq!(rx.borrow_and_update().seq, 0);
    let writer = writer(Some(log), Some(tx), 16, None, Arc::new(Stats::default()));
    let ack = writer.submit(b"one".to_vec(), true).unwrap().unwrap();
    ack.await.unwrap().unwrap();
    // Published before the acknowledgement: a reader never lags what a request saw.
    assert!(rx.has_changed().unwrap());
    let end = *rx.borrow();
    assert_eq!((end.seq, end.offset), (1, (log::HEADER + 3) as u64));
}

#[tokio::test]
async fn the_writer_tops_the_reserve_up_when_nothing_is_queued() {
    let dir = Dir::new("top-up");
    let (mut log, _) = Log::open(&dir.0, BIG).unwrap();
    log.reserve(64 << 10);
    let stats = Arc::new(Stats::default());
    let writer = writer(Some(log), None, 16, None, stats);
    let path = only_segment(&dir.0);
    let len = || fs::metadata(&path).unwrap().len();
    assert_eq!(len(), 0, "no zeros before the first group");
    let ack = writer.submit(b"request".to_vec(), true).unwrap().unwrap();
    ack.await.unwrap().unwrap();
    // After the acknowledgement, the queue being empty, the zeros follow.
    // The top-up may be seen half written: wait until the length holds still.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut last = 0;
    loop {
        let now = len();
        if now >= 32 << 10 && now == last {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never topped up: {now}"
        );
        last = now;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reserved = len();
    assert_eq!(all(&dir.0), [b"request".to_vec()]);
    // The next record is written over them: the file does not grow.
    let ack = writer.submit(b"another".to_vec(), true).unwrap().unwrap();
    ack.await.unwrap().unwrap();
    assert_eq!(len(), reserved);
    assert_eq!(all(&dir.0), [b"request".to_vec(), b"another".to_vec()]);
}

#[tokio::test]
async fn strict_syncs_for_waiting_records_and_soon_after_for_the_rest() {
    let dir = Dir::new("lazy");
    let (log, _) = Log::open(&dir.0, BIG).unwrap();
    let (tx, mut rx) = tokio::sync::watch::channel(log.end());
    let stats = Arc::new(Stats::default());
    let writer = writer(Some(log), Some(tx), 16, None, stats.clone());
    // A record no one waits for (a response record) is written at once...
    assert!(
        writer
            .submit(b"response".to_vec(), false)
            .unwrap()
            .is_none()
    );
    while stats.written.load(Ordering::Relaxed) < 1 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(all(&dir.0), [b"response".to_vec()]);
    // (`written` counts after the group's sync, had there been one.)
    assert_eq!(stats.syncs.load(Ordering::Relaxed), 0, "synced at once");
    // ...and synced (published to followers) soon after, on its own.
    tokio::time::timeout(Duration::from_secs(5), rx.changed())
        .await
        .expect("the lazy sync never came")
        .unwrap();
    assert_eq!(rx.borrow_and_update().seq, 1);
    assert_eq!(stats.syncs.load(Ordering::Relaxed), 1);
    // A record a request waits for is synced before its acknowledgement.
    let ack = writer.submit(b"request".to_vec(), true).unwrap().unwrap();
    ack.await.unwrap().unwrap();
    assert_eq!(stats.syncs.load(Ordering::Relaxed), 2);
    assert_eq!(rx.borrow_and_update().seq, 2);
}

#[test]
fn listing_summaries_says_what_the_full_load_says() {
    use super::stream::{self, Channel, Frame, StreamChunk, StreamEnd};
    let dir = Dir::new("summaries");
    let at = |e: Event, ts: &str| Event {
        stage_timestamp: ts.into(),
        ..e
    };
    let mut refused = event("3", "c1", "alice", event::STAGE_COMPLETE, Some(403));
    refused.response_status.as_mut().unwrap().reason = "Forbidden".into();
    let mut exec = event("4", "c1", "carol", event::STAGE_STARTED, Some(101));
    exec.annotations
        .insert(event::POD.into(), "demo/web-0".into());
    let events = [
        at(event("1", "c1", "alice", event::STAGE_RECEIVED, None), "T1"),
        at(
            event("2", "c2", "bob", event::STAGE_COMPLETE, Some(200)),
            "T2",
        ),
        // Alice's first request ends after her second: the session ends with it.
        at(refused, "T3"),
        at(
            event("1", "c1", "alice", event::STAGE_COMPLETE, Some(200)),
            "T4",
        ),
        at(exec, "T5"),
        at(event("5", "c2", "bob", event::STAGE_RECEIVED, None), "T6"),
    ];
    let chunk = |seq: u64, frames: Vec<Frame>, end: bool| StreamChunk {
        kind: stream::KIND.into(),
        audit_id: "4".into(),
        seq,
        subresource: "exec".into(),
        transport: "websocket".into(),
        frames,
        end: end.then(StreamEnd::default),
        ..StreamChunk::default()
    };
    let data = |t: u64, ch: Channel, n: usize| Frame::Data {
        t,
        ch,
        data: vec![b'x'; n],
    };
    let chunks = [
        chunk(
            0,
            vec![data(1, Channel::Stdin, 5), data(2, Channel::Stdout, 7)],
            false,
        ),
        chunk(1, vec![data(3, Channel::Stdout, 11)], true),
    ];
    let (mut log, _) = Log::open(&dir.0, BIG).unwrap();
    let mut buf = Vec::new();
    for payload in events
        .iter()
        .map(|e| serde_json::to_vec(e).unwrap())
        .chain(chunks.iter().map(|c| serde_json::to_vec(c).unwrap()))
    {
        log::frame(&payload, &mut buf);
        log.append(&buf, 1).unwrap();
        buf.clear();
    }
    drop(log);

    let loaded = sessions::load_all(&dir.0).unwrap();
    let mut full = sessions::sessions(loaded.events);
    sessions::attach_streams(&mut full, &loaded.recordings);
    let (listed, damage) = sessions::load_summaries(&dir.0).unwrap();
    assert!(damage.is_empty());
    assert!(listed.iter().all(|s| s.events.is_empty()), "events kept");
    assert_eq!(
        serde_json::to_value(&listed).unwrap(),
        serde_json::to_value(&full).unwrap()
    );
    let brief: Vec<_> = listed
        .iter()
        .map(|s| {
            (
                s.id.as_str(),
                s.requests,
                s.refused,
                s.end.as_str(),
                s.pod.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        brief,
        [
            ("c1", 2, 1, "T4", None),
            ("c2", 2, 0, "T6", None),
            ("c1.2", 1, 0, "T5", Some("demo/web-0")),
        ]
    );
    let stream = &listed[2].streams[0];
    assert_eq!(stream.bytes.get("stdin"), Some(&5));
    assert_eq!(stream.bytes.get("stdout"), Some(&18));
    assert!(stream.closed);

    // One session for show and replay: its events and its streams' payload, as the
    // full load has them.
    for (id, at) in [("c1", 0), ("c1.2", 2), ("c2", 1)] {
        let (session, recordings, _) = sessions::load_session(&dir.0, id).unwrap();
        assert_eq!(session.id, id);
        assert_eq!(
            serde_json::to_value(&session.events).unwrap(),
            serde_json::to_value(&full[at].events).unwrap(),
            "{id}"
        );
        assert_eq!(
            serde_json::to_value(&session).unwrap(),
            serde_json::to_value(&full[at]).unwrap()
        );
        let payload: usize = recordings
            .iter()
            .flat_map(|r| &r.frames)
            .map(|f| match f {
                Frame::Data { data, .. } => data.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(payload, if id == "c1.2" { 23 } else { 0 }, "{id}");
    }
    assert!(matches!(
        sessions::load_session(&dir.0, "nope"),
        Err(sessions::SessionsError::NotFound(_))
    ));
}
