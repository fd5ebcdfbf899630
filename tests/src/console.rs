//! A running `kgate console` and raw HTTP/1.1 requests to it: a browser's requests
//! with exactly the headers a test chooses (Host, Origin, cookies), which a client
//! library would fill in or refuse.
//!
//! Not here: the browser itself (tests/browser/console.mjs).

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    path::Path,
    process::{Child, Command, Stdio},
};

use crate::harness::kgate_bin;

/// `kgate console` with a kubeconfig; killed on drop.
pub struct Console {
    child: Child,
    /// What it printed: `http://localhost:PORT` (or https).
    pub url: String,
}

impl Console {
    /// `kgate console [--dir DIR] ARGS` with `kubeconfig`; returns once it printed its
    /// URL (it serves from then on).
    pub fn start(kubeconfig: &Path, dir: Option<&Path>, args: &[&str]) -> Self {
        let mut cmd = Command::new(kgate_bin());
        cmd.env("KUBECONFIG", kubeconfig)
            .env_remove("KGATE_RECORD_DIR")
            .arg("console");
        if let Some(dir) = dir {
            cmd.arg("--dir").arg(dir);
        }
        let mut child = cmd
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("kgate console: ")
            .unwrap_or_else(|| panic!("kgate console printed {line:?}"))
            .to_owned();
        Self { child, url }
    }

    pub fn port(&self) -> u16 {
        self.url.rsplit(':').next().unwrap().parse().unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A GET as a browser on this machine sends it (Host `localhost:PORT`): status
    /// and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        get(self.port(), &format!("localhost:{}", self.port()), path)
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One raw HTTP/1.1 request to 127.0.0.1:`port`: (status, body).
pub fn http(port: u16, request: &str) -> (u16, String) {
    let (status, _, body) = http_full(port, request);
    (status, body)
}

/// One raw HTTP/1.1 request to 127.0.0.1:`port`: (status, head, body), a chunked
/// body joined.
pub fn http_full(port: u16, request: &str) -> (u16, String, String) {
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, head.to_owned(), body)
}

/// A GET with the Host header `host`: (status, body).
pub fn get(port: u16, host: &str, path: &str) -> (u16, String) {
    http(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
}

/// An HTTP/1.1 chunked body's data.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}
