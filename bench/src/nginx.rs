//! nginx as the yardstick: a plain TLS reverse proxy in front of the same API server
//! (the double, or the user's), with the same serving certificate as kgate, run as
//! the bench's child from a generated config in the bench's temp dir. Installing it
//! is not done here (xtask installs it from Debian; `kgate bench` leaves its rows out
//! when it is missing).
//!
//! Configured as one would front an API server: HTTP/2 and HTTP/1.1 to clients,
//! HTTPS with a verified certificate and keep-alive connections upstream (nginx
//! proxies over HTTP/1.1 only), no response buffering (watches and large lists
//! stream), a buffered access log, `worker_processes 2` for the machine's two cores.
//! It does none of kgate's work (identity, policy, masking, recording): the rows
//! show what those cost on top of proxying.

use std::{fs, net::SocketAddr, path::Path, process::Command, time::Duration};

use anyhow::Context as _;

use crate::{
    child::{Child, free_port, wait_for},
    pki::Serving,
};

/// Where Debian installs nginx.
pub const DEFAULT_PATH: &str = "/usr/sbin/nginx";

/// The API server behind nginx.
pub struct Upstream<'a> {
    /// `host:port`.
    pub addr: &'a str,
    /// The name the API server's certificate is verified against, sent as SNI.
    pub server_name: &'a str,
    pub ca_file: &'a Path,
}

/// `nginx -v`, e.g. `nginx/1.22.1`.
pub fn version(nginx: &Path) -> String {
    Command::new(nginx)
        .arg("-v")
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stderr)
                .trim()
                .replace("nginx version: ", "")
        })
        .unwrap_or_default()
}

pub fn start(
    nginx: &Path,
    dir: &Path,
    upstream: &Upstream<'_>,
    serving: &Serving,
) -> anyhow::Result<(Child, SocketAddr)> {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let root = dir.join("nginx");
    fs::create_dir_all(root.join("tmp"))?;
    let conf = root.join("nginx.conf");
    fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process on;\nuser www-data www-data;\nworker_processes 2;\nworker_rlimit_nofile 32768;\n\
             pid {r}/nginx.pid;\nerror_log {r}/error.log warn;\n\
             events {{ worker_connections 16384; }}\n\
             http {{\n\
             \x20 access_log {r}/access.log combined buffer=64k flush=1s;\n\
             \x20 client_body_temp_path {r}/tmp/body;\n  proxy_temp_path {r}/tmp/proxy;\n\
             \x20 fastcgi_temp_path {r}/tmp/fcgi;\n  uwsgi_temp_path {r}/tmp/uwsgi;\n  scgi_temp_path {r}/tmp/scgi;\n\
             \x20 keepalive_requests 1000000;\n\
             \x20 upstream api {{ server {api}; keepalive 128; }}\n\
             \x20 server {{\n\
             \x20   listen {addr} ssl http2 backlog=4096;\n\
             \x20   ssl_certificate {cert};\n    ssl_certificate_key {key};\n\
             \x20   location / {{\n\
             \x20     proxy_pass https://api;\n\
             \x20     proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n\
             \x20     proxy_ssl_verify on;\n      proxy_ssl_name {name};\n      proxy_ssl_server_name on;\n\
             \x20     proxy_ssl_trusted_certificate {ca};\n      proxy_ssl_session_reuse on;\n\
             \x20     proxy_buffering off;\n      proxy_request_buffering off;\n\
             \x20     proxy_read_timeout 1h;\n\
             \x20   }}\n\
             \x20 }}\n\
             }}\n",
            r = root.display(),
            ca = upstream.ca_file.display(),
            name = upstream.server_name,
            api = upstream.addr,
            cert = serving.cert.display(),
            key = serving.key.display(),
        ),
    )?;
    let mut child = Child::spawn(
        Command::new(nginx)
            .arg("-p")
            .arg(&root)
            .arg("-c")
            .arg(&conf),
        &root.join("stderr.log"),
    )?
    .graceful();
    wait_for(Duration::from_secs(10), || {
        std::net::TcpStream::connect(addr).is_ok()
    })
    .with_context(|| {
        format!(
            "nginx did not start (see {})",
            root.join("error.log").display()
        )
    })?;
    child.check_running("nginx")?;
    Ok((child, addr))
}
