//! The smuggling attempts of `hostile.rs`: each a request whose framing the agent and
//! the API server could read differently, hiding a second request.

/// One smuggling attempt: the bytes, and whether the agent must refuse them outright
/// (RFC 9112 leaves it no other choice) rather than read them as one request.
pub(crate) struct Case {
    pub name: &'static str,
    pub bytes: Vec<u8>,
    pub must_refuse: bool,
}

pub(crate) fn smuggling_cases(token: &str) -> Vec<Case> {
    // The hidden request reads a Secret without a token: if the API server ever saw
    // it, kgate and the API server disagreed about where a request ends.
    let hidden = |case: &str| {
        format!(
            "GET /api/v1/namespaces/demo/secrets/db-creds?smuggled={case} HTTP/1.1\r\nHost: kubernetes\r\n\r\n"
        )
    };
    let head = |case: &str, version: &str, headers: &str| {
        format!(
            "POST /api/v1/namespaces/demo/configmaps?case={case} {version}\r\nHost: kubernetes\r\n\
             Authorization: Bearer {token}\r\nContent-Type: application/json\r\n{headers}\r\n"
        )
    };
    let case =
        |name: &'static str, must_refuse: bool, headers: &dyn Fn(usize) -> String, body: String| {
            Case {
                name,
                bytes: format!("{}{body}", head(name, "HTTP/1.1", &headers(body.len())))
                    .into_bytes(),
                must_refuse,
            }
        };
    let mut cases = vec![
        // CL.TE: Content-Length covers the hidden request, chunked ends before it.
        case(
            "cl_te",
            false,
            &|len| format!("Content-Length: {len}\r\nTransfer-Encoding: chunked\r\n"),
            format!("0\r\n\r\n{}", hidden("cl_te")),
        ),
        // TE.CL: the hidden request is chunk data; Content-Length ends before it.
        case(
            "te_cl",
            false,
            &|_| "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n".into(),
            format!(
                "{:x}\r\n{}\r\n0\r\n\r\n",
                hidden("te_cl").len(),
                hidden("te_cl")
            ),
        ),
        case(
            "cl_conflict",
            true,
            &|len| format!("Content-Length: 2\r\nContent-Length: {len}\r\n"),
            format!("{{}}{}", hidden("cl_conflict")),
        ),
        case(
            "cl_list",
            true,
            &|len| format!("Content-Length: 2, {len}\r\n"),
            format!("{{}}{}", hidden("cl_list")),
        ),
        case(
            "cl_sign",
            true,
            &|_| "Content-Length: +2\r\n".into(),
            format!("{{}}{}", hidden("cl_sign")),
        ),
        case(
            "cl_space",
            true,
            &|_| "Content-Length : 2\r\n".into(),
            format!("{{}}{}", hidden("cl_space")),
        ),
        case(
            "te_not_last",
            true,
            &|len| format!("Transfer-Encoding: chunked, identity\r\nContent-Length: {len}\r\n"),
            format!("0\r\n\r\n{}", hidden("te_not_last")),
        ),
        case(
            "te_unknown",
            true,
            &|len| format!("Transfer-Encoding: xchunked\r\nContent-Length: {len}\r\n"),
            format!("0\r\n\r\n{}", hidden("te_unknown")),
        ),
        case(
            "te_space",
            true,
            &|len| format!("Transfer-Encoding : chunked\r\nContent-Length: {len}\r\n"),
            format!("0\r\n\r\n{}", hidden("te_space")),
        ),
        case(
            "te_twice",
            false,
            &|len| {
                format!(
                    "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\nContent-Length: {len}\r\n"
                )
            },
            format!("0\r\n\r\n{}", hidden("te_twice")),
        ),
        // obs-fold: RFC 9112 §5.2 lets a server refuse it or replace it with spaces.
        case(
            "obs_fold",
            false,
            &|len| format!("X-Note: a\r\n b\r\nContent-Length: {len}\r\n"),
            format!("{{}}{}", hidden("obs_fold")),
        ),
        case(
            "obs_fold_te",
            false,
            &|len| format!("Transfer-Encoding: identity\r\n chunked\r\nContent-Length: {len}\r\n"),
            format!("0\r\n\r\n{}", hidden("obs_fold_te")),
        ),
        case(
            "chunk_not_hex",
            true,
            &|_| "Transfer-Encoding: chunked\r\n".into(),
            format!("zz\r\n{}\r\n0\r\n\r\n", hidden("chunk_not_hex")),
        ),
        case(
            "chunk_negative",
            true,
            &|_| "Transfer-Encoding: chunked\r\n".into(),
            format!("-1\r\n{}\r\n0\r\n\r\n", hidden("chunk_negative")),
        ),
        case(
            "chunk_overflow",
            true,
            &|_| "Transfer-Encoding: chunked\r\n".into(),
            format!(
                "10000000000000002\r\n{{}}\r\n0\r\n\r\n{}",
                hidden("chunk_overflow")
            ),
        ),
        case(
            "chunk_0x",
            true,
            &|_| "Transfer-Encoding: chunked\r\n".into(),
            format!("0x2\r\n{{}}\r\n0\r\n\r\n{}", hidden("chunk_0x")),
        ),
        case(
            "chunk_too_long",
            true,
            &|_| "Transfer-Encoding: chunked\r\n".into(),
            format!("2\r\n{{}}{}\r\n0\r\n\r\n", hidden("chunk_too_long")),
        ),
        // A whole request as the body: one request, whatever its body says.
        case(
            "in_body",
            false,
            &|len| format!("Content-Length: {len}\r\n"),
            hidden("in_body"),
        ),
        case(
            "nul_in_header",
            true,
            &|len| format!("X-Note: a\0b\r\nContent-Length: {len}\r\n"),
            format!("{{}}{}", hidden("nul_in_header")),
        ),
    ];
    // Chunked with HTTP/1.0, which has no chunked coding.
    let body = format!("0\r\n\r\n{}", hidden("http10_te"));
    cases.push(Case {
        name: "http10_te",
        bytes: format!(
            "{}{body}",
            head(
                "http10_te",
                "HTTP/1.0",
                &format!(
                    "Transfer-Encoding: chunked\r\nContent-Length: {}\r\n",
                    body.len()
                )
            )
        )
        .into_bytes(),
        must_refuse: false,
    });
    // Bare LF line ends.
    let body = format!("{{}}{}", hidden("bare_lf"));
    cases.push(Case {
        name: "bare_lf",
        bytes: format!(
            "POST /api/v1/namespaces/demo/configmaps?case=bare_lf HTTP/1.1\nHost: kubernetes\n\
             Authorization: Bearer {token}\nContent-Length: 2\n\n{body}"
        )
        .into_bytes(),
        must_refuse: false,
    });
    cases
}
