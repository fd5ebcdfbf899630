//! `exec` and `attach`: the query options (`command`, `stdin`, `stdout`, `stderr`,
//! `tty`), the upgrade (WebSocket, see [`super::websocket`], or SPDY/3.1), and the
//! kubelet's SPDY session: wait for the client's streams (`streamtype` error, stdin,
//! stdout, stderr, resize), reply to each, run the program, half-close stdout and
//! stderr, write the status on the error stream (JSON from v4 on, the bare message
//! before), then close the connection.
//!
//! SPDY protocols are the kubelet's: `v4.channel.k8s.io`, `v3.channel.k8s.io`,
//! `v2.channel.k8s.io`, `channel.k8s.io` (client-go also offers v5, which the kubelet
//! does not serve over SPDY, so it gets v4). Not here: v1's quirks beyond its status
//! format, the 30 s stream-creation timeout's exact error path (the connection just
//! closes).

use std::{collections::HashMap, time::Duration};

use http::StatusCode;
use tokio::sync::{mpsc, watch};

use super::{
    Body, Pod, Req, Upgrade, is_true,
    process::{self, Fd, Io, Output, Program, ResizeDecoder},
    spdy::{self, Conn},
    status as exit_status, upgrade_of, upgrade_required,
    websocket::{self, EXEC_PROTOCOLS},
};

const SPDY_PROTOCOLS: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// The kubelet's `streamCreationTimeout`.
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug)]
pub(super) struct Options {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

pub(super) fn serve(req: &mut Req, pod: Pod, attach: bool) -> hyper::Response<Body> {
    let tty = is_true(req.query("tty"));
    let opts = Options {
        stdin: is_true(req.query("stdin")),
        stdout: is_true(req.query("stdout")),
        // The kubelet drops stderr under a TTY: a terminal has one output.
        stderr: is_true(req.query("stderr")) && !tty,
        tty,
    };
    if !(opts.stdin || opts.stdout || opts.stderr) {
        return super::status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "you must specify at least 1 of stdin, stdout, stderr",
        );
    }
    let program = if attach {
        Program::Attach
    } else {
        Program::Exec(
            req.query_all("command")
                .into_iter()
                .map(str::to_owned)
                .collect(),
        )
    };
    match upgrade_of(req) {
        Some(Upgrade::WebSocket) => match websocket::negotiate(req, EXEC_PROTOCOLS) {
            Ok(accepted) => {
                let response = accepted.switching(None);
                let protocol = accepted.protocol.clone();
                tokio::spawn(async move {
                    if let Some(ws) = accepted.open().await {
                        websocket::session(ws, protocol, opts, program, pod).await;
                    }
                });
                response
            }
            Err(response) => response,
        },
        Some(Upgrade::Spdy) => {
            let client = spdy::client_protocols(req);
            match spdy::negotiate(&client, req, SPDY_PROTOCOLS) {
                Ok(accepted) => {
                    let response = accepted.switching();
                    let protocol = accepted.protocol.clone();
                    tokio::spawn(async move {
                        if let Some(io) = accepted.open().await {
                            let (conn, streams) = spdy::serve(io);
                            spdy_session(conn, streams, &protocol, opts, program, pod).await;
                        }
                    });
                    response
                }
                Err(response) => response,
            }
        }
        None => upgrade_required(),
    }
}

async fn spdy_session(
    conn: Conn,
    mut incoming: mpsc::UnboundedReceiver<spdy::Stream>,
    protocol: &str,
    opts: Options,
    program: Program,
    pod: Pod,
) {
    let resizable = matches!(protocol, "v4.channel.k8s.io" | "v3.channel.k8s.io");
    let expected = 1
        + usize::from(opts.stdin)
        + usize::from(opts.stdout)
        + usize::from(opts.stderr)
        + usize::from(opts.tty && resizable);
    let mut streams: HashMap<String, spdy::Stream> = HashMap::new();
    let deadline = tokio::time::sleep(STREAM_CREATION_TIMEOUT);
    tokio::pin!(deadline);
    while streams.len() < expected {
        tokio::select! {
            stream = incoming.recv() => {
                let Some(stream) = stream else { return };
                conn.reply(stream.id);
                let kind = stream.header("streamtype").unwrap_or_default().to_owned();
                let known = ["error", "stdin", "stdout", "stderr"].contains(&kind.as_str())
                    || (kind == "resize" && resizable);
                if known {
                    streams.insert(kind, stream);
                }
            }
            () = &mut deadline => {
                conn.close();
                return;
            }
        }
    }
    let id = |kind: &str| streams.get(kind).map(|s| s.id);
    let (stdout, stderr, error) = (id("stdout"), id("stderr"), id("error"));
    let stdin = streams.remove("stdin").map(|mut s| {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(chunk) = s.data.recv().await {
                if tx.send(chunk).is_err() {
                    break;
                }
            }
        });
        rx
    });
    let (size_tx, size_rx) = watch::channel(None);
    if let Some(mut resize) = streams.remove("resize") {
        tokio::spawn(async move {
            let mut decoder = ResizeDecoder::default();
            while let Some(chunk) = resize.data.recv().await {
                if let Some(size) = decoder.push(&chunk) {
                    let _ = size_tx.send(Some(size));
                }
            }
        });
    }
    let (out, mut out_rx) = Output::new(opts.tty);
    let io = Io {
        stdin: if opts.stdin { stdin } else { None },
        out,
        size: size_rx,
    };
    let (proc_program, proc_pod) = (program.clone(), pod.clone());
    let mut process =
        tokio::spawn(async move { process::run(&proc_program, &proc_pod, opts.tty, io).await });
    loop {
        tokio::select! {
            out = out_rx.recv() => {
                let Some((fd, data)) = out else { break };
                let target = if fd == Fd::Stdout { stdout } else { stderr };
                if let Some(id) = target {
                    conn.data(id, data, false);
                }
            }
            () = conn.gone() => {
                process.abort();
                return;
            }
        }
    }
    let exit = (&mut process).await.unwrap_or(process::Exit::Code(137));
    for id in [stdout, stderr].into_iter().flatten() {
        conn.data(id, bytes::Bytes::new(), true);
    }
    let command = match &program {
        Program::Exec(argv) => argv.clone(),
        Program::Attach => Vec::new(),
    };
    let status = exit_status::kubelet(&exit, &command);
    let bytes = if protocol == "v4.channel.k8s.io" {
        status.to_json()
    } else {
        status.to_text()
    };
    if let Some(id) = error
        && !bytes.is_empty()
    {
        conn.data(id, bytes.into(), false);
    }
    conn.close();
}
