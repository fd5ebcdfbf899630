//! A tiny TCP client and server for the kernel tests, run inside test namespaces.
//!
//! `kgate-probe connect ADDR [TEXT]`: connects (5 s timeout), sends TEXT and a newline,
//! reads one line back, and prints one JSON object: `{"ok":true,"peer":..,"local":..,
//! "reply":..}` or `{"ok":false,"error":..,"kind":..}`. It exits 0 either way: the
//! test judges the outcome.
//!
//! `kgate-probe serve ADDR`: for each connection, reads a line and answers
//! `from <peer> at <local>: <line>`, so a test sees who really connected.

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use serde_json::json;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["connect", addr, rest @ ..] => {
            let addr: SocketAddr = addr.parse()?;
            let text = rest.first().copied().unwrap_or("ping");
            println!("{}", connect(addr, text));
            Ok(())
        }
        ["serve", addr] => serve(addr.parse()?),
        _ => anyhow::bail!("usage: kgate-probe connect ADDR [TEXT] | serve ADDR"),
    }
}

fn connect(addr: SocketAddr, text: &str) -> serde_json::Value {
    let fail = |e: std::io::Error| json!({"ok": false, "error": e.to_string(), "kind": format!("{:?}", e.kind())});
    let mut stream = match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let local = stream
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if let Err(e) = writeln!(stream, "{text}") {
        return fail(e);
    }
    let mut reply = String::new();
    match BufReader::new(&stream).read_line(&mut reply) {
        Ok(_) => json!({"ok": true, "peer": peer, "local": local, "reply": reply.trim_end()}),
        Err(e) => fail(e),
    }
}

fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)?;
    println!("listening on {addr}");
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        std::thread::spawn(move || {
            let peer = stream
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            let local = stream
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            let mut line = String::new();
            if BufReader::new(&stream).read_line(&mut line).is_ok() {
                let _ = writeln!(stream, "from {peer} at {local}: {}", line.trim_end());
            }
        });
    }
    Ok(())
}
