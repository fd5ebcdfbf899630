use super::*;

fn data(t: u64, ch: Channel, data: &[u8]) -> Frame {
    Frame::Data {
        t,
        ch,
        data: data.to_vec(),
    }
}

fn recording(frames: Vec<Frame>) -> Recording {
    Recording {
        audit_id: "a".into(),
        subresource: "exec".into(),
        started: "2026-12-01T10:00:00.000000Z".into(),
        end: Some(StreamEnd {
            t: 3_000_000,
            ..StreamEnd::default()
        }),
        frames,
        ..Recording::default()
    }
}

#[test]
fn asciicast_v2_has_the_first_size_output_input_and_resizes() {
    let euro = "€".as_bytes();
    let rec = recording(vec![
        data(0, Channel::Resize, br#"{"Width":120,"Height":40}"#),
        data(10, Channel::Stdin, b"ls\r"),
        data(1_500_000, Channel::Stdout, &[b'a', euro[0], euro[1]]),
        data(1_600_000, Channel::Stdout, &[euro[2], b'\n']),
        data(1_700_000, Channel::Stderr, b"err\n"),
        data(1_800_000, Channel::Error, b"{}"),
        data(
            2_000_000,
            Channel::Resize,
            br#"{"Width":90,"Height":20}{"Width":91,"Height":21}"#,
        ),
    ]);
    let mut out = Vec::new();
    asciicast(&rec, &mut out).unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines[0],
        serde_json::json!({"version": 2, "width": 120, "height": 40, "timestamp": 1_796_119_200})
    );
    assert_eq!(
        &lines[1..],
        &[
            serde_json::json!([0.0, "r", "120x40"]),
            serde_json::json!([0.00001, "i", "ls\r"]),
            // The character cut in two is joined, not replaced.
            serde_json::json!([1.5, "o", "a"]),
            serde_json::json!([1.6, "o", "€\n"]),
            serde_json::json!([1.7, "o", "err\n"]),
            serde_json::json!([2.0, "r", "90x20"]),
            serde_json::json!([2.0, "r", "91x21"]),
        ]
    );
}

#[test]
fn play_writes_output_exactly_and_in_order() {
    let rec = recording(vec![
        data(0, Channel::Stdin, b"ignored"),
        data(5, Channel::Stdout, &[0xff, 0, b'x']),
        data(6, Channel::Stderr, b"e"),
        data(7, Channel::Stdout, b"y"),
    ]);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let pace = Pace {
        speed: 0.0,
        max_idle: None,
    };
    play(&rec, pace, &mut out, &mut err).unwrap();
    assert_eq!(out, [0xff, 0, b'x', b'y']);
    assert_eq!(err, b"e");
    // A capped wait: 10 s recorded, at most 1 ms waited.
    let rec = recording(vec![data(10_000_000, Channel::Stdout, b"late")]);
    let started = std::time::Instant::now();
    let pace = Pace {
        // A wait longer than a Duration holds, capped.
        speed: 1e-300,
        max_idle: Some(Duration::from_millis(1)),
    };
    let mut out = Vec::new();
    play(&rec, pace, &mut out, &mut Vec::new()).unwrap();
    assert_eq!(out, b"late");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn chunks_assemble_in_order_and_gaps_are_reported() {
    let chunk = |seq: u64, t: u64, end: bool| StreamChunk {
        audit_id: "s".into(),
        seq,
        subresource: "exec".into(),
        frames: vec![data(t, Channel::Stdout, &[u8::try_from(seq).unwrap()])],
        end: end.then(StreamEnd::default),
        ..StreamChunk::default()
    };
    let other = StreamChunk {
        audit_id: "other".into(),
        ..chunk(0, 0, false)
    };
    let recs = assemble(vec![
        chunk(3, 30, true),
        other,
        chunk(0, 0, false),
        chunk(1, 10, false),
        chunk(1, 10, false),
    ]);
    assert_eq!(recs.len(), 2);
    let rec = &recs[0];
    assert_eq!(rec.audit_id, "s");
    assert_eq!(rec.missing_chunks, [2]);
    assert!(rec.end.is_some());
    let bytes: Vec<u8> = rec
        .frames
        .iter()
        .filter_map(|f| match f {
            Frame::Data { data, .. } => Some(data[0]),
            _ => None,
        })
        .collect();
    assert_eq!(bytes, [0, 1, 3]);
    let summary = rec.summary();
    assert_eq!(summary.bytes["stdout"], 3);
    assert!(summary.closed);
}

#[test]
fn text_keeps_an_incomplete_character_for_later() {
    let mut pending = vec![b'a', 0xe2, 0x82];
    assert_eq!(take_text(&mut pending), "a");
    assert_eq!(pending, [0xe2, 0x82]);
    pending.push(0xac);
    assert_eq!(take_text(&mut pending), "€");
    // Invalid bytes in the middle become U+FFFD; an incomplete tail still waits.
    let mut pending = vec![0xff, b'b', 0xc3];
    assert_eq!(take_text(&mut pending), "\u{fffd}b");
    assert_eq!(pending, [0xc3]);
}
