//! Raw clients for the wire details kubectl does not show: the WebSocket channel bytes
//! of v4, v5 and the pre-v4 base64 protocol, v5's stdin half-close, resize, the
//! kubelet's WebSocket port-forward, and the refusals of requests that cannot upgrade.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use kgate_apiserver_double::{
    ApiServer, Config, Handle,
    client::{https_client, text},
};
use serde_json::Value;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Message, client::IntoClientRequest},
};

use super::TIMEOUT;

type Wss = WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

fn tls(ca_pem: &str) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()).flatten() {
        roots.add(cert).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Opens a WebSocket to `path` offering `protocols`; returns it and the chosen one.
async fn open_ws(
    server: &Handle,
    path: &str,
    protocols: &str,
) -> Result<(Wss, String), tokio_tungstenite::tungstenite::Error> {
    let tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tls(server.ca_pem()).connect(name, tcp).await.unwrap();
    let mut req = format!("wss://{}{path}", server.addr())
        .into_client_request()
        .unwrap();
    let h = req.headers_mut();
    h.insert(
        "authorization",
        format!("Bearer {}", server.admin_token()).parse().unwrap(),
    );
    h.insert("sec-websocket-protocol", protocols.parse().unwrap());
    let (ws, response) = tokio_tungstenite::client_async(req, stream).await?;
    let chosen = response
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    Ok((ws, chosen))
}

/// Every message until the server closes, with the close code.
async fn drain(ws: &mut Wss) -> (Vec<Message>, Option<u16>) {
    let mut messages = Vec::new();
    loop {
        let next = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("no stall");
        match next {
            Some(Ok(Message::Close(frame))) => {
                return (messages, frame.map(|f| u16::from(f.code)));
            }
            Some(Ok(m)) => messages.push(m),
            other => panic!("stream ended without a close: {other:?}"),
        }
    }
}

fn binary(channel: u8, data: &[u8]) -> Message {
    Message::Binary([&[channel][..], data].concat().into())
}

const EXEC: &str = "/api/v1/namespaces/demo/pods/web-0/exec";

#[tokio::test(flavor = "multi_thread")]
async fn websocket_exec_wire_format() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    // v4 (the kubelet): hello on stdout, the output, the JSON status, a normal close.
    let path = format!("{EXEC}?command=echo&command=hi&stdout=true&stderr=true");
    let (mut ws, chosen) = open_ws(&server, &path, "v9.channel.k8s.io, v4.channel.k8s.io")
        .await
        .unwrap();
    assert_eq!(chosen, "v4.channel.k8s.io");
    let (messages, code) = drain(&mut ws).await;
    assert_eq!(
        messages,
        [
            binary(1, b""),
            binary(1, b"hi\n"),
            binary(3, br#"{"metadata":{},"status":"Success"}"#)
        ]
    );
    assert_eq!(code, Some(1000));

    // v5 (the API server's translator): the exit code wrapped as client-go decoded it.
    let path = format!("{EXEC}?command=false&stdout=true");
    let (mut ws, _) = open_ws(&server, &path, "v5.channel.k8s.io").await.unwrap();
    let (messages, _) = drain(&mut ws).await;
    let status: Value = serde_json::from_slice(&messages[1].clone().into_data()[1..]).unwrap();
    assert_eq!(messages[1].clone().into_data()[0], 3);
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "1");
    assert_eq!(
        status["message"],
        "command terminated with non-zero exit code: command terminated with exit code 1"
    );

    // v5: stdin half-closed with [255, 0] ends `cat`; a TTY maps NL to CR NL.
    let path = format!("{EXEC}?command=cat&stdin=true&stdout=true&tty=true");
    let (mut ws, _) = open_ws(&server, &path, "v5.channel.k8s.io").await.unwrap();
    ws.send(binary(0, b"a\n")).await.unwrap();
    ws.send(Message::Binary(vec![255, 0].into())).await.unwrap();
    let (messages, _) = drain(&mut ws).await;
    assert_eq!(messages[..2], [binary(1, b""), binary(1, b"a\r\n")]);

    // Resize: `stty size` reports the size sent on channel 4.
    let path = format!("{EXEC}?command=stty&command=size&stdin=true&stdout=true&tty=true");
    let (mut ws, _) = open_ws(&server, &path, "v5.channel.k8s.io").await.unwrap();
    ws.send(binary(4, br#"{"Width":100,"Height":30}"#))
        .await
        .unwrap();
    let (messages, _) = drain(&mut ws).await;
    assert_eq!(messages[1], binary(1, b"30 100\r\n"));

    // base64.channel.k8s.io (pre-v4): text frames, '0'+channel, base64 data, and the
    // bare message on the error channel (nothing on success).
    let path = format!("{EXEC}?command=sh&command=-c&command=echo%20hi%3B%20exit%204&stdout=true");
    let (mut ws, chosen) = open_ws(&server, &path, "base64.channel.k8s.io")
        .await
        .unwrap();
    assert_eq!(chosen, "base64.channel.k8s.io");
    let (messages, _) = drain(&mut ws).await;
    assert_eq!(messages[..2], [Message::text("1"), Message::text("1aGkK")]);
    let Message::Text(error) = &messages[2] else {
        panic!("{messages:?}")
    };
    let decoded = base64_decode(&error.as_str()[1..]);
    assert!(error.as_str().starts_with('3'), "{error}");
    assert_eq!(
        decoded,
        "command terminated with non-zero exit code: error executing command [sh -c echo hi; exit 4], exit code 4"
    );

    // Nothing the server speaks: a bare 403.
    match open_ws(&server, &path, "v9.channel.k8s.io").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
        }
        other => panic!("expected a 403, got {:?}", other.map(|(_, p)| p)),
    }
}

fn base64_decode(s: &str) -> String {
    use base64::Engine as _;
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(s).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_port_forward_channels() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let path = "/api/v1/namespaces/demo/pods/web-0/portforward?ports=8080,9090";
    let (mut ws, chosen) = open_ws(&server, path, "v4.channel.k8s.io").await.unwrap();
    assert_eq!(chosen, "v4.channel.k8s.io");
    // Each channel opens with its port, two bytes little-endian.
    let mut first = Vec::new();
    for _ in 0..4 {
        first.push(ws.next().await.unwrap().unwrap());
    }
    assert_eq!(
        first,
        [
            binary(0, &8080u16.to_le_bytes()),
            binary(1, &8080u16.to_le_bytes()),
            binary(2, &9090u16.to_le_bytes()),
            binary(3, &9090u16.to_le_bytes()),
        ]
    );
    ws.send(binary(2, b"to 9090")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), binary(2, b"to 9090"));
    ws.send(binary(0, b"to 8080")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), binary(0, b"to 8080"));
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_without_a_usable_upgrade() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let client = https_client(server.ca_pem(), false);
    let request = |uri: &str| {
        http::Request::post(format!("{}{uri}", server.url()))
            .header("authorization", format!("Bearer {}", server.admin_token()))
    };
    // No upgrade at all: the API server's 400 Status.
    let req = request(&format!("{EXEC}?command=true&stdout=true"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client.request(req).await.unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = serde_json::from_str(&text(response.into_body()).await).unwrap();
    assert_eq!(body["message"], "Upgrade request required");
    // SPDY with a protocol the kubelet does not speak: 403 naming what it accepts.
    let req = request(&format!("{EXEC}?command=true&stdout=true"))
        .header("connection", "Upgrade")
        .header("upgrade", "SPDY/3.1")
        .header("x-stream-protocol-version", "v9.channel.k8s.io")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client.request(req).await.unwrap();
    assert_eq!(response.status(), 403);
    let accepted: Vec<_> = response
        .headers()
        .get_all("x-accepted-stream-protocol-versions")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(accepted[0], "v4.channel.k8s.io");
    // None of stdin, stdout, stderr.
    let req = request(&format!("{EXEC}?command=true"))
        .header("connection", "Upgrade")
        .header("upgrade", "SPDY/3.1")
        .header("x-stream-protocol-version", "v4.channel.k8s.io")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client.request(req).await.unwrap();
    assert_eq!(response.status(), 400);
    // Logs are GET only.
    let req = request("/api/v1/namespaces/demo/pods/web-0/log")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(client.request(req).await.unwrap().status(), 405);
}
