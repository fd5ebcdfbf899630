//! The recorder's segment reader on hostile bytes (a torn, zero-filled or corrupted
//! segment): it never panics, what it returns re-frames to exactly the good prefix it
//! reports, only zeros follow that prefix unreported, and damage in one record never
//! costs the records before it.

#![no_main]

use kgate::record::log::{HEADER, frame, unframe};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        raw(rest);
    } else {
        damaged(rest);
    }
});

/// Arbitrary bytes as a segment.
fn raw(data: &[u8]) {
    let (records, good, reason) = unframe(data);
    assert!(good <= data.len());
    // Only zeros (space written ahead, never a record) may follow the good prefix
    // without a reason.
    let unwritten = data[good..].iter().all(|&b| b == 0);
    assert_eq!(reason.is_none(), unwritten, "{reason:?} at {good}");
    let mut again = Vec::new();
    for record in &records {
        assert!(!record.is_empty());
        frame(record, &mut again);
    }
    assert_eq!(again, &data[..good], "the records are not the good prefix");
}

/// A well-formed segment of records cut from `data`, then damaged at one offset (one
/// byte flipped, or the file cut there): every record wholly before the damage survives.
fn damaged(data: &[u8]) {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let Some((at, payloads)) = rest.split_first_chunk::<2>() else {
        return;
    };
    let chunk = usize::from(split % 32) + 1;
    let originals: Vec<&[u8]> = payloads.chunks(chunk).collect();
    let mut segment = Vec::new();
    let mut ends = Vec::new();
    for payload in &originals {
        frame(payload, &mut segment);
        ends.push(segment.len());
    }
    let (whole, good, reason) = unframe(&segment);
    assert_eq!(
        (whole.as_slice(), good, reason),
        (originals.as_slice(), segment.len(), None)
    );
    if segment.is_empty() {
        return;
    }
    let offset = usize::from(u16::from_le_bytes(*at)) % segment.len();
    let intact = ends.iter().take_while(|&&end| end <= offset).count();
    let mut broken = segment.clone();
    let cut = split & 0x80 != 0;
    if cut {
        broken.truncate(offset);
    } else {
        broken[offset] ^= 0xff;
    }
    let (records, good, reason) = unframe(&broken);
    // A flipped payload byte fails the checksum, a flipped header byte the length or the
    // checksum (a CRC-32 collision aside), a cut is torn: the damage is reported where
    // the damaged record starts, and every record before it is kept.
    assert_eq!(records.as_slice(), &originals[..intact]);
    let start = intact.checked_sub(1).map_or(0, |i| ends[i]);
    if cut && offset == start {
        // Cut between records: a shorter, undamaged segment.
        assert_eq!((good, reason), (offset, None));
        return;
    }
    assert_eq!(good, start);
    assert!(reason.is_some());
    assert!(offset - start < HEADER + chunk);
}
