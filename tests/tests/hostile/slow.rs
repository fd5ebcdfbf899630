//! Slow clients for `hostile.rs`: timing a connection's cut-off, a ClientHello to
//! dribble, and a watch that must outlive a long silence.

use super::*;

/// How long until the agent closes a connection on which `dribble` sends one byte
/// per second after `first`, reading whatever comes back.
pub(crate) async fn time_to_close<S>(mut stream: S, first: Vec<u8>, dribble: Vec<u8>) -> Duration
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let started = Instant::now();
    let (mut read, mut write) = tokio::io::split(&mut stream);
    let writer = async {
        let _ = write.write_all(&first).await;
        let _ = write.flush().await;
        for b in dribble.iter().cycle() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if write.write_all(&[*b]).await.is_err() || write.flush().await.is_err() {
                break;
            }
        }
        std::future::pending::<()>().await;
    };
    let reader = async {
        let mut buf = [0; 4096];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    let limit = CUT_OFF + Duration::from_secs(20);
    let _ = tokio::time::timeout(limit, async {
        tokio::select! {
            () = writer => {},
            () = reader => {},
        }
    })
    .await;
    started.elapsed()
}

/// The first bytes a TLS client sends (its ClientHello).
pub(crate) fn client_hello(agent: &Agent) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(agent.ca_pem.as_bytes()).flatten() {
        roots.add(cert).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut conn = rustls::ClientConnection::new(
        Arc::new(config),
        ServerName::from(IpAddr::from([127, 0, 0, 1])),
    )
    .unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}

/// An HTTP/1.1 watch that sees no event for `silence`, then one: what it read.
pub(crate) async fn quiet_watch(s: &Setup, silence: Duration) -> Result<String, String> {
    let rv =
        s.server.get("configmaps", "demo", "app-config").unwrap()["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_owned();
    let mut tls = connect(&s.agent, b"http/1.1").await;
    let request = format!(
        "GET /api/v1/namespaces/demo/configmaps?watch=1&resourceVersion={rv} HTTP/1.1\r\nHost: kubernetes\r\n\
         Authorization: Bearer {}\r\n\r\n",
        s.server.admin_token()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0; 4096];
    let quiet_until = Instant::now() + silence;
    // The head arrives at once; then silence.
    while Instant::now() < quiet_until {
        match tokio::time::timeout_at(quiet_until.into(), tls.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => {
                return Err(format!(
                    "closed during the silence: {}",
                    String::from_utf8_lossy(&got)
                ));
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    s.server
        .create(
            "configmaps",
            "demo",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "after-the-silence"}}),
        )
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&got).contains("after-the-silence") {
        match tokio::time::timeout_at(deadline.into(), tls.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => {
                return Err(format!(
                    "no event after the silence: {}",
                    String::from_utf8_lossy(&got)
                ));
            }
        }
    }
    Ok(String::from_utf8_lossy(&got).into_owned())
}
