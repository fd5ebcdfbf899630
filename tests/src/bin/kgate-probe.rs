//! A tiny TCP client and server for the kernel tests, run inside test namespaces.
//!
//! `kgate-probe connect ADDR [TEXT]`: connects (5 s timeout), sends TEXT and a newline,
//! reads one line back, and prints one JSON object: `{"ok":true,"peer":..,"local":..,
//! "reply":..}` or `{"ok":false,"error":..,"kind":..}`. It exits 0 either way: the
//! test judges the outcome.
//!
//! `kgate-probe serve ADDR`: for each connection, reads a line and answers
//! `from <peer> at <local>: <line>`, so a test sees who really connected.
//!
//! `kgate-probe bpf-open PATH`: asks the kernel for the BPF object pinned at PATH
//! (`BPF_OBJ_GET`, what any tool that would change a map or a link must do first) and
//! prints `{"ok":true}` or `{"ok":false,"error":..,"kind":..}`.

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
        ["bpf-open", path] => {
            println!("{}", bpf_open(path));
            Ok(())
        }
        _ => anyhow::bail!("usage: kgate-probe connect ADDR [TEXT] | serve ADDR | bpf-open PATH"),
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

/// `BPF_OBJ_GET` of a pinned object.
#[allow(unsafe_code)]
fn bpf_open(path: &str) -> serde_json::Value {
    /// The `BPF_OBJ_*` member of `union bpf_attr`.
    #[repr(C)]
    struct ObjAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        // The kernel refuses (EINVAL) an attr whose bytes past the last field are not 0.
        _pad: u32,
    }
    const BPF_OBJ_GET: libc::c_long = 7;
    let Ok(path) = std::ffi::CString::new(path) else {
        return json!({"ok": false, "error": "path has a NUL byte", "kind": "InvalidInput"});
    };
    let attr = ObjAttr {
        pathname: path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
        path_fd: 0,
        _pad: 0,
    };
    // SAFETY: `attr` is a valid, initialised bpf_attr prefix that outlives the call,
    // and its size is passed; the path pointer stays valid while `path` lives.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &raw const attr,
            std::mem::size_of::<ObjAttr>(),
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return json!({"ok": false, "error": e.to_string(), "kind": format!("{:?}", e.kind())});
    }
    // SAFETY: the kernel just handed us this descriptor; nothing else owns it.
    unsafe { libc::close(i32::try_from(fd).unwrap_or(-1)) };
    json!({"ok": true})
}
