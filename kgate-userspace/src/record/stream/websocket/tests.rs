use super::*;

/// One RFC 6455 frame, with the shortest length encoding.
pub(crate) fn frame(opcode: u8, fin: bool, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![u8::from(fin) << 7 | opcode];
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => out.push(m | u8::try_from(n).unwrap()),
        n @ 126..=0xffff => {
            out.push(m | 126);
            out.extend_from_slice(&u16::try_from(n).unwrap().to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

#[derive(Debug, PartialEq, Eq)]
enum Got {
    Data(u8, Vec<u8>),
    Close(u8),
}

/// Decodes `pieces` in order, joining data of one channel that arrived in pieces.
fn decode(base64: bool, pieces: &[&[u8]]) -> Result<Vec<Got>, DecodeError> {
    let mut frames = Frames::default();
    let mut channels = Channels::new(base64);
    let mut got: Vec<Got> = Vec::new();
    for piece in pieces {
        frames.feed(piece, &mut |event| {
            channels.on(event, &mut |event| {
                match event {
                    ChannelEvent::Data(ch, data) => match got.last_mut() {
                        Some(Got::Data(last, d)) if *last == ch => d.extend_from_slice(data),
                        _ => got.push(Got::Data(ch, data.to_vec())),
                    },
                    ChannelEvent::Close(ch) => got.push(Got::Close(ch)),
                }
                Ok(())
            })
        })?;
    }
    Ok(got)
}

/// `input` split in two at every byte boundary, and fed byte by byte, always decodes
/// to `want`.
fn every_split(base64: bool, input: &[u8], want: &[Got]) {
    for at in 0..=input.len() {
        let (a, b) = input.split_at(at);
        assert_eq!(decode(base64, &[a, b]).unwrap(), want, "split at {at}");
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(decode(base64, &bytes).unwrap(), want, "byte by byte");
}

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

#[test]
fn binary_channels_masked_and_unmasked_fragmented_and_long() {
    let long: Vec<u8> = (0..300u32).map(|i| (i % 251) as u8).collect();
    let mut input = Vec::new();
    // The server's channel-open messages: just the channel byte.
    input.extend(frame(2, true, &[1], None));
    // A masked client message on stdin.
    input.extend(frame(2, true, b"\x00echo hi\n", Some(KEY)));
    input.extend(frame(2, true, b"\x01hi\n", None));
    // Fragmented, with a ping in between (control frames may interleave).
    input.extend(frame(2, false, b"\x02par", Some(KEY)));
    input.extend(frame(9, true, b"ping", Some(KEY)));
    input.extend(frame(0, false, b"ti", Some(KEY)));
    input.extend(frame(0, true, b"al\n", Some(KEY)));
    // A 16-bit length.
    let mut msg = vec![1];
    msg.extend_from_slice(&long);
    input.extend(frame(2, true, &msg, None));
    // v5: stdin closed.
    input.extend(frame(2, true, &[255, 0], Some(KEY)));
    input.extend(frame(8, true, &[0x03, 0xe8], None));
    every_split(
        false,
        &input,
        &[
            Got::Data(0, b"echo hi\n".to_vec()),
            Got::Data(1, b"hi\n".to_vec()),
            Got::Data(2, b"partial\n".to_vec()),
            Got::Data(1, long),
            Got::Close(0),
        ],
    );
}

#[test]
fn a_64_bit_length_frame_passes_in_pieces() {
    let payload: Vec<u8> = (0..70_000u32).map(|i| (i % 253) as u8).collect();
    let mut msg = vec![1];
    msg.extend_from_slice(&payload);
    let input = frame(2, true, &msg, Some(KEY));
    assert_eq!(input[1] & 0x7f, 127);
    let want = [Got::Data(1, payload)];
    for size in [1, 7, 4096, 16 * 1024, input.len()] {
        let pieces: Vec<&[u8]> = input.chunks(size).collect();
        assert_eq!(decode(false, &pieces).unwrap(), want, "pieces of {size}");
    }
}

#[test]
fn base64_channels_decode_across_splits() {
    let mut input = Vec::new();
    input.extend(frame(1, true, b"1", None));
    input.extend(frame(1, true, b"0aGVsbG8gd29ybGQK", Some(KEY)));
    input.extend(frame(1, false, b"1Z3L", None));
    input.extend(frame(0, true, b"DvMOfZQ==", None));
    input.extend(frame(1, true, b"2", None));
    every_split(
        true,
        &input,
        &[
            Got::Data(0, b"hello world\n".to_vec()),
            Got::Data(1, "grüße".as_bytes().to_vec()),
        ],
    );
}

#[test]
fn undecodable_frames_are_errors_not_panics() {
    let compressed = {
        let mut f = frame(2, true, b"\x01x", None);
        f[0] |= 0x40;
        f
    };
    let cases: &[(&[u8], &str)] = &[
        (&compressed, "RSV"),
        (&frame(0, true, b"x", None), "continuation"),
        (&frame(3, true, b"x", None), "reserved opcode"),
        (&frame(9, false, b"x", None), "control frame"),
        (&frame(1, true, b"1x", None), "text message"),
    ];
    for (input, want) in cases {
        let error = decode(false, &[input]).unwrap_err();
        assert!(error.0.contains(want), "{error} should mention {want}");
    }
    let error = decode(true, &[&frame(1, true, b"x", None)]).unwrap_err();
    assert!(error.0.contains("channel digit"), "{error}");
    let error = decode(true, &[&frame(1, true, b"1!!!!", None)]).unwrap_err();
    assert!(error.0.contains("base64"), "{error}");
    // Garbage of every kind ends in Ok or an error, never a panic.
    let mut seed = 7u32;
    for _ in 0..2000 {
        let junk: Vec<u8> = (0..64)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                seed.to_be_bytes()[1]
            })
            .collect();
        let _ = decode(false, &[&junk]);
        let _ = decode(true, &[&junk]);
    }
}
