//! The SPDY/3 header-compression dictionary (draft 3, section 2.6.10.1), the preset
//! zlib dictionary of every header block; spdystream's `headerDictionary` holds the same
//! 1423 bytes. A zlib stream names its dictionary by Adler-32, so one wrong byte makes
//! every header block undecodable on the other side.
//!
//! Deliberately a copy of its own, not kgate's: an independent transcription is what
//! makes a wrong byte on either side show up as header blocks the other cannot read.

use std::sync::OnceLock;

/// The SPDY/3 header dictionary (draft 3, section 2.6.10.1): length-prefixed common
/// header names and values, then a run of common value fragments. 1423 bytes.
pub(super) fn dictionary() -> &'static [u8] {
    static DICT: OnceLock<Vec<u8>> = OnceLock::new();
    DICT.get_or_init(|| {
        const WORDS: &[&str] = &[
            "options", "head", "post", "put", "delete", "trace", "accept", "accept-charset",
            "accept-encoding", "accept-language", "accept-ranges", "age", "allow",
            "authorization", "cache-control", "connection", "content-base", "content-encoding",
            "content-language", "content-length", "content-location", "content-md5",
            "content-range", "content-type", "date", "etag", "expect", "expires", "from", "host",
            "if-match", "if-modified-since", "if-none-match", "if-range", "if-unmodified-since",
            "last-modified", "location", "max-forwards", "pragma", "proxy-authenticate",
            "proxy-authorization", "range", "referer", "retry-after", "server", "te", "trailer",
            "transfer-encoding", "upgrade", "user-agent", "vary", "via", "warning",
            "www-authenticate", "method", "get", "status", "200 OK", "version", "HTTP/1.1", "url",
            "public", "set-cookie", "keep-alive", "origin",
        ];
        const TAIL: &str = "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";
        let mut dict = Vec::with_capacity(1423);
        for word in WORDS {
            dict.extend_from_slice(&u32::try_from(word.len()).unwrap_or(0).to_be_bytes());
            dict.extend_from_slice(word.as_bytes());
        }
        dict.extend_from_slice(TAIL.as_bytes());
        dict
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_is_the_spdy3_one() {
        let dict = dictionary();
        assert_eq!(dict.len(), 1423);
        assert!(dict.starts_with(b"\x00\x00\x00\x07options\x00\x00\x00\x04head"));
        assert!(dict.ends_with(b"utf-,*,enq=0."));
        // The dictionary id client-go's first header block carries (zlib FDICT).
        let mut deflate = flate2::Compress::new(flate2::Compression::best(), true);
        assert_eq!(deflate.set_dictionary(dict).unwrap(), 0xe3c6_a7c2);
    }
}
