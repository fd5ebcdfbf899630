//! exec stream capture and replay through a standalone agent with a record log: real
//! `kubectl exec -i` over WebSocket (v5) and over SPDY/3.1, with a known stdin and a
//! command in the double that echoes it and writes known stderr; then
//! `kgate sessions replay` must give back exactly the stdout and stderr bytes kubectl
//! received, its asciicast the same text in order with stdin as sent, and `-o json`
//! every stdin byte. Also: attach, a TTY exec's size and resizes, an agent killed
//! mid-session, a 64 MB exec with bounded agent memory, and port-forward recorded as
//! streams and byte counts.

use std::{
    io::Write,
    net::TcpStream,
    process::{Command, Output, Stdio},
    time::Instant,
};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use kgate::record::{
    event::{Event, STAGE_COMPLETE, STAGE_RECEIVED, STAGE_STARTED},
    replay::Recording,
    sessions,
    stream::{self, Channel, Frame},
};
use kgate_tests::{
    apiserver::{ApiServer, Config},
    harness::{Agent, Kubectl, scratch_dir},
};
use serde_json::Value;

#[path = "recording_streams/support.rs"]
mod support;

use support::{Rig, asciicast, events_until, free_port, kgate, recordings_until, session_of};

/// stdout: stdin (cat), then `done`; stderr in between. Exit 3 comes back on the
/// error channel.
const SCRIPT: &str = "cat; echo to stderr >&2; echo done; exit 3";

/// A stdin larger than a chunk (64 KiB) and than one read (16 KiB), with multi-byte
/// UTF-8 characters that reads and frames will cut in two.
fn stdin_text() -> Vec<u8> {
    let mut text = String::new();
    for i in 0..6000 {
        text.push_str(&format!("line {i:05}: grüße, €uro ✓ — kgate\n"));
    }
    text.into_bytes()
}

fn exec(kubectl: &Kubectl, spdy: bool, stdin: &[u8]) -> Output {
    let mut cmd = kubectl.command();
    cmd.args(["exec", "-i", "web-0", "--", "sh", "-c", SCRIPT]);
    if spdy {
        cmd.env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// With strict durability (the default): chunks count as written once synced.
#[tokio::test(flavor = "multi_thread")]
async fn exec_sessions_are_recorded_and_replayed_byte_exact() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let dir = scratch_dir("rec-streams");
    let records = dir.join("records");
    let agent = Agent::standalone_with(
        &server.url(),
        server.ca_pem(),
        server.admin_token(),
        &format!(
            "identity: {{unboundSubjects: [kubernetes-admin]}}\n\
             policy: {{defaultAction: allow}}\n\
             record: {{dir: '{}', durability: strict}}\n",
            records.display()
        ),
    )
    .unwrap();
    let kubectl = Kubectl::new(
        scratch_dir("rec-streams-kubectl"),
        &agent.url(),
        &agent.ca_pem,
        server.admin_token(),
    );
    let records_arg = records.to_str().unwrap().to_owned();
    tokio::task::spawn_blocking(move || {
        let _agent = agent;
        let stdin = stdin_text();
        let mut seen = Vec::new();
        for (spdy, transport) in [(false, "websocket"), (true, "spdy")] {
            let out = exec(&kubectl, spdy, &stdin);
            assert_eq!(out.status.code(), Some(3), "{transport}: {out:?}");
            let mut expected = stdin.clone();
            expected.extend_from_slice(b"done\n");
            assert!(out.stdout == expected, "{transport}: kubectl's stdout");
            assert_eq!(
                String::from_utf8_lossy(&out.stderr),
                "to stderr\ncommand terminated with exit code 3\n",
                "{transport}"
            );

            // The stream's chunks, closed, linked to the exec request's audit ID.
            let recs = recordings_until(&records, |r| {
                r.iter()
                    .filter(|r| r.transport == transport && r.end.is_some())
                    .count()
                    == 1
            });
            let rec = recs
                .iter()
                .find(|r| r.transport == transport)
                .unwrap_or_else(|| panic!("{transport}: no recording in {recs:#?}"))
                .clone();
            assert_eq!(rec.subresource, "exec");
            assert!(rec.capture_error.is_none(), "{transport}: {rec:?}");
            assert!(rec.missing_chunks.is_empty(), "{transport}");
            seen.push(rec.audit_id.clone());
            let session = session_of(&records, &rec.audit_id);

            // The request's audit events: started at the 101, complete at the
            // stream's end (as the API server's are), with the bytes relayed.
            let stages = |events: &[Event]| {
                events
                    .iter()
                    .filter(|e| e.audit_id == rec.audit_id)
                    .map(|e| e.stage.clone())
                    .collect::<Vec<_>>()
            };
            let events = events_until(&records, |e| stages(e).len() == 3);
            assert_eq!(
                stages(&events),
                [STAGE_RECEIVED, STAGE_STARTED, STAGE_COMPLETE],
                "{transport}"
            );
            let complete = events
                .iter()
                .find(|e| e.audit_id == rec.audit_id && e.stage == STAGE_COMPLETE)
                .unwrap();
            assert_eq!(complete.code(), Some(101));
            let end = rec.end.as_ref().unwrap();
            assert_eq!(
                complete.annotation(stream::BYTES_IN),
                Some(end.bytes_in.to_string().as_str())
            );
            assert!(
                end.bytes_in > stdin.len() as u64,
                "{transport}: framing included"
            );

            // Terminal replay: stdout and stderr exactly as kubectl got them (kubectl
            // adds its own "command terminated" line; the exit status is on the
            // error channel, not replayed).
            let replay = kgate(&[
                "sessions",
                "replay",
                &session,
                "--dir",
                &records_arg,
                "--speed",
                "0",
            ]);
            assert!(replay.stdout == out.stdout, "{transport}: replayed stdout");
            assert_eq!(String::from_utf8_lossy(&replay.stderr), "to stderr\n");

            // asciicast v2: output in order, stdin as sent.
            let cast = kgate(&[
                "sessions",
                "replay",
                &session,
                "--dir",
                &records_arg,
                "--asciicast",
                "-",
            ]);
            let (header, events) = asciicast(&String::from_utf8(cast.stdout).unwrap());
            assert_eq!(header["version"], 2);
            // No TTY, no resize: the default size.
            assert_eq!(
                (header["width"].as_u64(), header["height"].as_u64()),
                (Some(80), Some(24))
            );
            let (mut o, mut i, mut last) = (String::new(), String::new(), 0.0);
            for event in events {
                let t = event[0].as_f64().unwrap();
                assert!(t >= last, "{transport}: events in time order");
                last = t;
                let data = event[2].as_str().unwrap();
                match event[1].as_str().unwrap() {
                    "o" => o.push_str(data),
                    "i" => i.push_str(data),
                    other => panic!("unexpected event {other}"),
                }
            }
            let mut text = String::from_utf8(stdin.clone()).unwrap();
            assert!(i == text, "{transport}: asciicast stdin");
            text.push_str("to stderr\ndone\n");
            assert!(o == text, "{transport}: asciicast output");

            // -o json: every stdin byte, and stdin's close.
            let json = kgate(&[
                "sessions",
                "replay",
                &session,
                "--dir",
                &records_arg,
                "-o",
                "json",
            ]);
            let json: Value = serde_json::from_slice(&json.stdout).unwrap();
            let mut sent = Vec::new();
            let mut closed = false;
            for frame in json["frames"].as_array().unwrap() {
                match (frame["event"].as_str(), frame["ch"].as_str()) {
                    (Some("data"), Some("stdin")) => {
                        sent.extend(STANDARD.decode(frame["data"].as_str().unwrap()).unwrap());
                    }
                    (Some("close"), Some("stdin")) => closed = true,
                    _ => {}
                }
            }
            assert!(sent == stdin, "{transport}: json stdin");
            assert!(closed, "{transport}: stdin's EOF is recorded");
            let error = json["frames"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["ch"] == "error")
                .expect("the exit status on the error channel");
            let status = STANDARD.decode(error["data"].as_str().unwrap()).unwrap();
            assert!(
                String::from_utf8_lossy(&status).contains("NonZeroExitCode"),
                "{transport}: {}",
                String::from_utf8_lossy(&status)
            );

            // sessions show lists the stream.
            let show = kgate(&["sessions", "show", &session, "--dir", &records_arg]);
            let show = String::from_utf8_lossy(&show.stdout);
            assert!(
                show.contains(&rec.audit_id) && show.contains(&format!("stdin {} B", stdin.len())),
                "{show}"
            );
        }
        // sessions list: each exec's session has one stream.
        let listed = kgate(&["sessions", "list", "--dir", &records_arg, "-o", "json"]);
        let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
        for audit_id in &seen {
            let session = listed
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["streams"][0]["auditID"] == audit_id.as_str())
                .unwrap_or_else(|| panic!("no session lists stream {audit_id}: {listed}"));
            assert_eq!(session["streams"].as_array().unwrap().len(), 1);
            assert_eq!(session["streams"][0]["subresource"], "exec");
        }
        let table = kgate(&["sessions", "list", "--dir", &records_arg]);
        let table = String::from_utf8_lossy(&table.stdout);
        assert!(
            table.lines().next().unwrap().ends_with("STREAMS"),
            "{table}"
        );
        assert_eq!(seen.len(), 2);
    })
    .await
    .unwrap();
}

/// A quiet session is written out chunk by chunk while it lasts, so an agent killed
/// with SIGKILL mid-session leaves what had been said in the log.
#[tokio::test(flavor = "multi_thread")]
async fn a_sigkill_mid_session_keeps_what_was_captured() {
    let rig = Rig::start("rec-kill").await;
    let (agent, kubectl, records) = (rig.agent, rig.kubectl, rig.records);
    tokio::task::spawn_blocking(move || {
        let mut child = kubectl
            .command()
            .args(["exec", "-i", "web-0", "--", "cat"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"before the kill\n").unwrap();
        let mut echoed = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut echoed,
        )
        .unwrap();
        assert_eq!(echoed, "before the kill\n");
        // The stream stays open and quiet: only the chunk timer writes it out.
        let has_both = |r: &Recording| {
            [Channel::Stdin, Channel::Stdout].iter().all(|want| {
                r.frames.iter().any(|f| {
                    matches!(f, Frame::Data { ch, data, .. } if ch == want && data == b"before the kill\n")
                })
            })
        };
        let recs = recordings_until(&records, |r| r.iter().any(has_both));
        assert!(recs.iter().any(has_both), "{recs:?}");
        let killed = Command::new("kill")
            .args(["-KILL", &agent.pid().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        drop(stdin);
        let _ = child.wait();
        drop(agent);
        // What the killed agent left: the stream, unfinished, with what it carried.
        let loaded = sessions::load_all(&records).unwrap();
        let rec = loaded
            .recordings
            .iter()
            .find(|r| has_both(r))
            .expect("the captured frames survive the kill");
        assert!(rec.end.is_none(), "{rec:?}");
        let session = session_of(&records, &rec.audit_id);
        let show = kgate(&["sessions", "show", &session, "--dir", records.to_str().unwrap()]);
        assert!(
            String::from_utf8_lossy(&show.stdout).contains("[open, or its last chunk is lost]"),
            "{}",
            String::from_utf8_lossy(&show.stdout)
        );
    })
    .await
    .unwrap();
}

/// Capture holds no stream: 64 MB through `kubectl exec -i cat`, captured both ways,
/// leave the agent's memory bounded (the relay waits for the record writer rather
/// than queueing chunks without bound).
#[tokio::test(flavor = "multi_thread")]
async fn a_large_exec_is_captured_with_bounded_agent_memory() {
    let rig = Rig::start("rec-big").await;
    let (agent, kubectl, records) = (rig.agent, rig.kubectl, rig.records);
    let total = 64usize << 20;
    let (agent, received, elapsed) = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut child = kubectl
            .command()
            .args(["exec", "-i", "web-0", "--", "cat"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            let block: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
            for _ in 0..total >> 20 {
                stdin.write_all(&block).unwrap();
            }
        });
        let mut out = child.stdout.take().unwrap();
        let mut received = 0usize;
        let mut buf = vec![0; 1 << 16];
        loop {
            let n = std::io::Read::read(&mut out, &mut buf).unwrap();
            if n == 0 {
                break;
            }
            received += n;
        }
        writer.join().unwrap();
        assert!(child.wait().unwrap().success());
        (agent, received, started.elapsed())
    })
    .await
    .unwrap();
    assert_eq!(received, total);
    let rss = agent.peak_rss_kib();
    let recs = recordings_until(&records, |r| r.iter().any(|r| r.end.is_some()));
    let summary = recs.iter().find(|r| r.end.is_some()).unwrap().summary();
    eprintln!(
        "captured a {} MB exec both ways in {elapsed:?} (debug build), agent peak RSS {rss} KiB, {:?}",
        total >> 20,
        summary.bytes
    );
    assert_eq!(summary.bytes.get("stdin"), Some(&(total as u64)));
    assert_eq!(summary.bytes.get("stdout"), Some(&(total as u64)));
    // Without capture the agent peaks near 33 MiB here; buffering the stream would
    // take 128 MiB more, and an unbounded writer queue took about 58 MiB.
    assert!(
        rss > 0 && rss < 52 * 1024,
        "agent peak RSS {rss} KiB for a {} MB exec: capture buffered it",
        total >> 20
    );
}

/// attach is captured like exec; a TTY session's size (kubectl's first resize) heads
/// its asciicast and each resize is an `"r"` event.
#[tokio::test(flavor = "multi_thread")]
async fn attach_and_tty_sessions_replay_with_their_size() {
    let rig = Rig::start("rec-tty").await;
    let (agent, kubectl, records) = (rig.agent, rig.kubectl, rig.records);
    let records_arg = records.to_str().unwrap().to_owned();
    tokio::task::spawn_blocking(move || {
        let _agent = agent;
        // attach: the main process echoes stdin; its EOF ends the attach.
        let mut child = kubectl
            .command()
            .args(["attach", "-i", "web-0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"attached\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("attached\n"),
            "{out:?}"
        );
        let recs = recordings_until(&records, |r| {
            r.iter()
                .any(|r| r.subresource == "attach" && r.end.is_some())
        });
        let rec = recs.iter().find(|r| r.subresource == "attach").unwrap();
        let session = session_of(&records, &rec.audit_id);
        let replay = kgate(&[
            "sessions",
            "replay",
            &session,
            "--dir",
            &records_arg,
            "--speed",
            "0",
        ]);
        assert!(replay.stdout == out.stdout, "attach: replayed stdout");

        // A TTY: kubectl inside a pseudo-terminal of 100x30 (script(1) provides it).
        let base: Vec<String> = kubectl
            .command()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let inner = format!(
            "stty cols 100 rows 30; kubectl {} exec -it web-0 -- stty size",
            base.join(" ")
        );
        let out = Command::new("script")
            .args(["-qec", &inner, "/dev/null"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let shown = String::from_utf8_lossy(&out.stdout);
        assert!(shown.contains("30 100"), "{out:?}");
        let recs = recordings_until(&records, |r| {
            r.iter().any(|r| r.subresource == "exec" && r.end.is_some())
        });
        let rec = recs.iter().find(|r| r.subresource == "exec").unwrap();
        assert_eq!(rec.first_size(), Some((100, 30)), "{rec:?}");
        let session = session_of(&records, &rec.audit_id);
        let cast = kgate(&[
            "sessions",
            "replay",
            &session,
            "--dir",
            &records_arg,
            "--asciicast",
            "-",
        ]);
        let (header, events) = asciicast(&String::from_utf8(cast.stdout).unwrap());
        assert_eq!(
            (header["width"].as_u64(), header["height"].as_u64()),
            (Some(100), Some(30))
        );
        assert!(
            events.iter().any(|e| e[1] == "r" && e[2] == "100x30"),
            "{events:?}"
        );
        // The pty's output (onlcr turns \n into \r\n), as kubectl printed it.
        let output: String = events
            .iter()
            .filter(|e| e[1] == "o")
            .map(|e| e[2].as_str().unwrap())
            .collect();
        assert_eq!(output, "30 100\r\n");
    })
    .await
    .unwrap();
}

/// Port-forward is recorded as its streams and their byte counts, never payload.
#[tokio::test(flavor = "multi_thread")]
async fn port_forward_streams_are_counted_not_captured() {
    let rig = Rig::start("rec-pf").await;
    let (agent, kubectl, records) = (rig.agent, rig.kubectl, rig.records);
    tokio::task::spawn_blocking(move || {
        let _agent = agent;
        for (env, transport) in [
            (Some(("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")), "spdy"),
            (None, "spdy-over-websocket"),
        ] {
            let port = free_port();
            let mut cmd = kubectl.command();
            cmd.args(["port-forward", "web-0", &format!("{port}:8080")]);
            if let Some((k, v)) = env {
                cmd.env(k, v);
            }
            let mut child = cmd
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut ready = String::new();
            std::io::BufRead::read_line(
                &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
                &mut ready,
            )
            .unwrap();
            assert!(ready.contains("Forwarding"), "{ready}");
            let payload = b"secret payload through port-forward";
            let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
            conn.write_all(payload).unwrap();
            let mut back = vec![0; payload.len()];
            std::io::Read::read_exact(&mut conn, &mut back).unwrap();
            assert_eq!(&back, payload);
            // The connection's end closes its stream pair (kubectl half-closes the
            // data stream, the echo answers EOF with EOF)...
            drop(conn);
            let closed = |f: &Frame| matches!(f, Frame::Closed { .. });
            recordings_until(&records, |r| {
                r.iter()
                    .any(|r| r.transport == transport && r.frames.iter().any(closed))
            });
            // ...and kubectl's exit the whole stream.
            let _ = child.kill();
            let _ = child.wait();
            let recs = recordings_until(&records, |r| {
                r.iter()
                    .any(|r| r.transport == transport && r.end.is_some())
            });
            let rec = recs
                .iter()
                .find(|r| r.transport == transport)
                .unwrap_or_else(|| panic!("{transport}: no recording in {recs:#?}"));
            assert_eq!(rec.subresource, "portforward");
            assert!(
                rec.end.is_some(),
                "{transport}: the stream closed with kubectl"
            );
            assert!(rec.capture_error.is_none(), "{transport}: {rec:?}");
            let json = serde_json::to_value(&rec.frames).unwrap();
            let frames = json.as_array().unwrap();
            assert!(
                frames
                    .iter()
                    .any(|f| f["event"] == "open" && f["type"] == "data" && f["port"] == "8080"),
                "{transport}: {frames:?}"
            );
            assert!(
                frames.iter().any(|f| f["event"] == "closed"
                    && f["bytesIn"] == payload.len()
                    && f["bytesOut"] == payload.len()),
                "{transport}: {rec:?}"
            );
            assert!(
                frames.iter().all(|f| f.get("data").is_none()),
                "{transport}: no payload recorded"
            );
        }
    })
    .await
    .unwrap();
}
