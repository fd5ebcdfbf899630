//! The malformed bearer tokens of `hostile.rs`.

use super::*;

/// A cheap deterministic generator (xorshift64): the same flood every run.
pub(crate) struct Rng(pub u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }
}

/// Bearer tokens that must all be refused: random bytes, truncated and bit-flipped
/// JWTs, `alg: none`, unknown key ids, foreign signers, huge ones.
pub(crate) fn malformed_tokens(server: &Handle, count: usize) -> Vec<String> {
    let subject = Subject {
        namespace: "demo".into(),
        service_account: "bot".into(),
        service_account_uid: "uid-bot".into(),
        pod: None,
    };
    let audiences = [kgate_tests::apiserver::DEFAULT_ISSUER.to_owned()];
    let real = server.mint_token(&subject, &audiences, 3600);
    let foreign = server.mint_foreign_token(&subject, &audiences, 3600);
    let parts: Vec<&str> = real.split('.').collect();
    let claims = parts[1];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let printable = |rng: &mut Rng, len: usize| -> String {
        (0..len)
            .map(|_| char::from(b'!' + u8::try_from(rng.below(94)).unwrap()))
            .collect()
    };
    (0..count)
        .map(|i| match i % 8 {
            0 => {
                let len = 1 + rng.below(300);
                printable(&mut rng, len)
            }
            1 => real[..rng.below(real.len() - 1)].to_owned(),
            2 => {
                let mut bytes = real.clone().into_bytes();
                let at = parts[0].len() + parts[1].len() + 2 + rng.below(parts[2].len());
                bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
                String::from_utf8(bytes).unwrap()
            }
            3 => format!(
                "{}.{claims}.",
                URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#)
            ),
            4 => format!(
                "{}.{claims}.{}",
                URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"RS256","kid":"nope-{i}"}}"#)),
                parts[2]
            ),
            5 => foreign.clone(),
            6 => format!(
                "{}.{claims}.{}",
                URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
                URL_SAFE_NO_PAD.encode(rng.next().to_le_bytes())
            ),
            _ => {
                let len = 8_000 + rng.below(56_000);
                printable(&mut rng, len)
            }
        })
        .collect()
}
