//! Runs the API-server double:
//! `apiserver-double [--listen ADDR] --cert-dir DIR [--bookmark-interval-ms N]
//! [--issuer URL] [--bulk-secrets COUNT:BYTES]`.
//!
//! `--bulk-secrets` stores COUNT Secrets of about BYTES each in namespace `demo`
//! before serving (the masking benchmark's large list).
//!
//! Writes `ca.crt` (the CA that signed the serving certificate) and `token` (the admin
//! bearer token) into DIR, then prints `listening on https://ADDR` on stdout, and
//! serves until SIGTERM or SIGINT, on which it exits 0.
//!
//! The files are written before the line is printed, each through a rename, so that a
//! caller that waits for the line, or polls for a file, never reads a partial one.
//! The serving key is not written: nothing outside the double needs it.

use std::{
    io::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use kgate_apiserver_double::{ApiServer, Config};
use tokio::signal::unix::{SignalKind, signal};

const USAGE: &str = "usage: apiserver-double [--listen ADDR] --cert-dir DIR \
                     [--bookmark-interval-ms N] [--issuer URL] [--bulk-secrets COUNT:BYTES]";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    if let Some(unknown) = args.iter().step_by(2).find(|a| {
        !matches!(
            a.as_str(),
            "--listen" | "--cert-dir" | "--bookmark-interval-ms" | "--issuer" | "--bulk-secrets"
        )
    }) {
        anyhow::bail!("unknown argument {unknown:?}\n{USAGE}");
    }
    let listen: SocketAddr = value("--listen")
        .map_or("127.0.0.1:0", String::as_str)
        .parse()
        .context("--listen")?;
    let dir = PathBuf::from(value("--cert-dir").context(USAGE)?);
    let mut config = Config {
        listen,
        ..Config::default()
    };
    if let Some(ms) = value("--bookmark-interval-ms") {
        config.bookmark_interval =
            Duration::from_millis(ms.parse().context("--bookmark-interval-ms")?);
    }
    if let Some(issuer) = value("--issuer") {
        config.issuer.clone_from(issuer);
    }
    // Install the handlers first: a SIGTERM right after start-up must not kill us
    // with the default action before we can exit cleanly.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;

    let bulk = value("--bulk-secrets")
        .map(|v| {
            let (count, bytes) = v.split_once(':').context("--bulk-secrets COUNT:BYTES")?;
            anyhow::Ok((
                count.parse::<usize>().context("--bulk-secrets COUNT")?,
                bytes.parse::<usize>().context("--bulk-secrets BYTES")?,
            ))
        })
        .transpose()?;
    let server = ApiServer::start(config).await?;
    if let Some((count, bytes)) = bulk {
        server.insert_secrets("demo", count, bytes);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    write_atomically(&dir.join("ca.crt"), server.ca_pem())?;
    write_atomically(&dir.join("token"), server.admin_token())?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {}", server.url())?;
    stdout.flush()?;
    drop(stdout);

    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    drop(server); // stops accepting; open connections end with the runtime
    Ok(())
}

fn write_atomically(path: &Path, contents: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}
