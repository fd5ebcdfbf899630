use std::{fs, time::Duration};

use super::read;
use crate::record::log::{self, Limits, Log, Position};
use crate::record::tests::Dir;

const SMALL: Limits = Limits {
    segment_bytes: 4096,
    max_bytes: 1 << 30,
    max_age: Duration::from_secs(3600),
};

fn append(log: &mut Log, from: usize, to: usize) {
    for i in from..to {
        let mut buf = Vec::new();
        log::frame(
            format!("record {i:04} {}", "x".repeat(100)).as_bytes(),
            &mut buf,
        );
        log.append(&buf, 1).unwrap();
    }
    log.sync().unwrap();
}

fn numbers(records: &[Vec<u8>]) -> Vec<usize> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(&r[7..11]).parse().unwrap())
        .collect()
}

#[test]
fn reads_across_segments_in_order_up_to_the_durable_end() {
    let dir = Dir::new("reader-follow");
    let (mut log, _) = Log::open(&dir.0, SMALL).unwrap();
    append(&mut log, 0, 100);
    assert!(log.segments().len() > 2, "the test needs rotations");
    let end = log.end();
    // More records the writer has not published as durable yet.
    append(&mut log, 100, 110);

    let mut at = Position::default();
    let mut seen = Vec::new();
    loop {
        let batch = read(&dir.0, at, end, 7, usize::MAX).unwrap();
        assert_eq!(batch.skipped, 0);
        if batch.records.is_empty() {
            assert_eq!(batch.next, end, "caught up exactly at the durable end");
            break;
        }
        assert!(batch.records.len() <= 7);
        seen.extend(numbers(&batch.records));
        assert_eq!(batch.next.seq, seen.len() as u64);
        at = batch.next;
    }
    assert_eq!(seen, (0..100).collect::<Vec<_>>());

    // Once published, the rest follows from where the reader stopped.
    let batch = read(&dir.0, at, log.end(), 1000, usize::MAX).unwrap();
    assert_eq!(numbers(&batch.records), (100..110).collect::<Vec<_>>());
    assert_eq!(batch.next, log.end());
}

#[test]
fn a_byte_budget_still_reads_one_record() {
    let dir = Dir::new("reader-budget");
    let (mut log, _) = Log::open(&dir.0, SMALL).unwrap();
    append(&mut log, 0, 5);
    let batch = read(&dir.0, Position::default(), log.end(), 100, 1).unwrap();
    assert_eq!(numbers(&batch.records), [0]);
}

#[test]
fn segments_deleted_before_they_were_read_are_counted() {
    let dir = Dir::new("reader-retention");
    let (mut log, _) = Log::open(&dir.0, SMALL).unwrap();
    append(&mut log, 0, 100);
    let segments = log.segments();
    let second_first: u64 = segments[1]
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .trim_end_matches(".log")
        .parse()
        .unwrap();
    fs::remove_file(&segments[0]).unwrap();
    let batch = read(&dir.0, Position::default(), log.end(), 1000, usize::MAX).unwrap();
    assert_eq!(batch.skipped, second_first);
    assert!(batch.skip_reason.unwrap().contains("retention"));
    assert_eq!(
        numbers(&batch.records),
        (usize::try_from(second_first).unwrap()..100).collect::<Vec<_>>()
    );
}

#[test]
fn a_damaged_sealed_segment_is_skipped_and_counted() {
    let dir = Dir::new("reader-damage");
    let (mut log, _) = Log::open(&dir.0, SMALL).unwrap();
    append(&mut log, 0, 100);
    let first = log.segments()[0].clone();
    let mut data = fs::read(&first).unwrap();
    // Corrupt the third record's payload.
    let record = log::HEADER + 112;
    data[2 * record + log::HEADER + 3] ^= 0xff;
    fs::write(&first, data).unwrap();
    let batch = read(&dir.0, Position::default(), log.end(), 2, usize::MAX).unwrap();
    assert_eq!(numbers(&batch.records), [0, 1]);
    let rest = read(&dir.0, batch.next, log.end(), 1000, usize::MAX).unwrap();
    assert!(rest.skipped > 0);
    assert!(rest.skip_reason.unwrap().contains("checksum"));
    assert_eq!(2 + rest.skipped + rest.records.len() as u64, 100);
    assert_eq!(rest.next, log.end());
}
