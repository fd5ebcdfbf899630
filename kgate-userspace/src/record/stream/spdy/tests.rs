use flate2::{Compress, Compression, FlushCompress};

use super::*;

/// Writes frames as client-go's spdystream does: one deflate context per direction,
/// seeded with the SPDY/3 dictionary, a sync flush per header block.
pub(crate) struct Encoder {
    deflate: Compress,
}

impl Default for Encoder {
    fn default() -> Self {
        let mut deflate = Compress::new(Compression::best(), true);
        deflate.set_dictionary(dictionary::dictionary()).unwrap();
        Self { deflate }
    }
}

impl Encoder {
    fn block(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&u32::try_from(headers.len()).unwrap().to_be_bytes());
        for (k, v) in headers {
            for s in [k, v] {
                raw.extend_from_slice(&u32::try_from(s.len()).unwrap().to_be_bytes());
                raw.extend_from_slice(s.as_bytes());
            }
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        self.deflate
            .compress_vec(&raw, &mut out, FlushCompress::Sync)
            .unwrap();
        out
    }

    fn control(kind: u16, flags: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![0x80, 3];
        out.extend_from_slice(&kind.to_be_bytes());
        out.push(flags);
        out.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
        out.extend_from_slice(body);
        out
    }

    pub(crate) fn syn_stream(&mut self, id: u32, fin: bool, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut body = id.to_be_bytes().to_vec();
        body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        body.extend(self.block(headers));
        Self::control(SYN_STREAM, u8::from(fin), &body)
    }

    pub(crate) fn syn_reply(&mut self, id: u32, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut body = id.to_be_bytes().to_vec();
        body.extend(self.block(headers));
        Self::control(SYN_REPLY, 0, &body)
    }

    pub(crate) fn data(id: u32, fin: bool, data: &[u8]) -> Vec<u8> {
        let mut out = id.to_be_bytes().to_vec();
        out.push(u8::from(fin));
        out.extend_from_slice(&u32::try_from(data.len()).unwrap().to_be_bytes()[1..]);
        out.extend_from_slice(data);
        out
    }

    pub(crate) fn rst(id: u32) -> Vec<u8> {
        let mut body = id.to_be_bytes().to_vec();
        body.extend_from_slice(&5u32.to_be_bytes());
        Self::control(RST_STREAM, 0, &body)
    }

    pub(crate) fn ping(id: u32) -> Vec<u8> {
        Self::control(6, 0, &id.to_be_bytes())
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Got {
    Open(u32, Vec<(String, String)>),
    Data(u32, Vec<u8>),
    Fin(u32),
    Reset(u32),
}

fn decode(pieces: &[&[u8]]) -> Result<Vec<Got>, DecodeError> {
    let mut frames = Frames::default();
    let mut got: Vec<Got> = Vec::new();
    for piece in pieces {
        frames.feed(piece, &mut |event| {
            match event {
                SpdyEvent::Open { id, headers } => got.push(Got::Open(id, headers)),
                SpdyEvent::Data { id, data } => match got.last_mut() {
                    Some(Got::Data(last, d)) if *last == id => d.extend_from_slice(data),
                    _ => got.push(Got::Data(id, data.to_vec())),
                },
                SpdyEvent::Fin { id } => got.push(Got::Fin(id)),
                SpdyEvent::Reset { id } => got.push(Got::Reset(id)),
            }
            Ok(())
        })?;
    }
    Ok(got)
}

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn exec_streams_decode_at_every_split() {
    // The client side of `kubectl exec -i`: error, stdin, stdout, stderr streams (each
    // header block depends on the ones before it), stdin data, its FIN, a ping.
    let mut enc = Encoder::default();
    let mut input = Vec::new();
    let types = ["error", "stdin", "stdout", "stderr"];
    for (i, t) in types.iter().enumerate() {
        let id = 1 + 2 * u32::try_from(i).unwrap();
        input.extend(enc.syn_stream(id, false, &[("streamtype", t)]));
    }
    input.extend(Encoder::ping(1));
    input.extend(Encoder::data(3, false, b"line one\n"));
    input.extend(Encoder::data(3, false, &[0xff; 300]));
    input.extend(Encoder::data(3, true, b""));
    input.extend(Encoder::rst(7));
    let mut want: Vec<Got> = types
        .iter()
        .enumerate()
        .map(|(i, t)| {
            Got::Open(
                1 + 2 * u32::try_from(i).unwrap(),
                headers(&[("streamtype", t)]),
            )
        })
        .collect();
    let mut data = b"line one\n".to_vec();
    data.extend_from_slice(&[0xff; 300]);
    want.extend([Got::Data(3, data), Got::Fin(3), Got::Reset(7)]);
    for at in 0..=input.len() {
        let (a, b) = input.split_at(at);
        assert_eq!(decode(&[a, b]).unwrap(), want, "split at {at}");
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(decode(&bytes).unwrap(), want, "byte by byte");
}

#[test]
fn replies_keep_the_zlib_context_in_step() {
    // The server side: SYN_REPLYs (whose headers nothing needs) share the context
    // with later blocks, so skipping one would break the next.
    let mut enc = Encoder::default();
    let mut input = Vec::new();
    input.extend(enc.syn_reply(1, &[("x-a", "1")]));
    input.extend(enc.syn_reply(3, &[("x-a", "1")]));
    input.extend(Encoder::data(5, false, b"out"));
    input.extend(enc.syn_stream(2, true, &[("streamtype", "data"), ("port", "8080")]));
    assert_eq!(
        decode(&[&input]).unwrap(),
        [
            Got::Data(5, b"out".to_vec()),
            Got::Open(2, headers(&[("streamtype", "data"), ("port", "8080")])),
            Got::Fin(2),
        ]
    );
}

#[test]
fn bad_spdy_is_an_error_not_a_panic() {
    let mut v2 = Encoder::control(SYN_STREAM, 0, &[0; 12]);
    v2[1] = 2;
    assert!(decode(&[&v2]).unwrap_err().0.contains("version 2"));
    let huge = Encoder::control(SYN_STREAM, 0, &[])[..5]
        .iter()
        .copied()
        .chain([0x10, 0, 0])
        .collect::<Vec<_>>();
    assert!(decode(&[&huge]).unwrap_err().0.contains("bytes"));
    // A header block that is not zlib.
    let mut body = 1u32.to_be_bytes().to_vec();
    body.extend_from_slice(&[0; 6]);
    body.extend_from_slice(b"not zlib at all");
    let error = decode(&[&Encoder::control(SYN_STREAM, 0, &body)]).unwrap_err();
    assert!(error.0.contains("header block"), "{error}");
    let short = Encoder::control(SYN_STREAM, 0, &[0, 0, 1]);
    assert!(decode(&[&short]).unwrap_err().0.contains("too short"));
    let mut seed = 11u32;
    for _ in 0..2000 {
        let mut junk: Vec<u8> = (0..96)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                seed.to_be_bytes()[1]
            })
            .collect();
        junk[0] |= 0x80;
        junk[1] = 3;
        let _ = decode(&[&junk]);
    }
}
