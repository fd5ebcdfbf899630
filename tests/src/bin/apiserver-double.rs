//! Runs the API-server double: `apiserver-double --listen ADDR --cert-dir DIR`.
//! Writes `ca.crt` and `token` into DIR, prints `listening on https://ADDR`, and serves
//! until killed.

use std::{net::SocketAddr, path::PathBuf};

use kgate_tests::apiserver::{ApiServer, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    let listen: SocketAddr = value("--listen")
        .map_or("127.0.0.1:0", String::as_str)
        .parse()?;
    let dir =
        PathBuf::from(value("--cert-dir").ok_or_else(|| {
            anyhow::anyhow!("usage: apiserver-double --listen ADDR --cert-dir DIR")
        })?);
    let server = ApiServer::start(Config {
        listen,
        ..Config::default()
    })
    .await?;
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("ca.crt"), server.ca_pem())?;
    std::fs::write(dir.join("token"), server.admin_token())?;
    println!("listening on {}", server.url());
    tokio::signal::ctrl_c().await.ok();
    Ok(())
}
