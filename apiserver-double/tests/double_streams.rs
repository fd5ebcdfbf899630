//! The double's streaming subresources against the real kubectl: exec (with and
//! without a terminal), attach, logs (with follow) and port-forward, each over
//! WebSocket and over SPDY/3.1; `wire` covers what kubectl does not show.

#[path = "double_streams/wire.rs"]
mod wire;

use std::{
    io::{BufRead, BufReader, Read, Write},
    process::{Command, Stdio},
    sync::{Arc, mpsc},
    time::{Duration, Instant},
};

use kgate_apiserver_double::{
    ApiServer, Config, Handle,
    client::{Killed, Kubectl, echo_round_trip, port_forward, scratch_dir},
};

const TIMEOUT: Duration = Duration::from_secs(30);
const SPDY_EXEC: (&str, &str) = ("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false");
const SPDY_PORT_FORWARD: (&str, &str) = ("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false");

fn kubectl(server: &Handle, tag: &str) -> Kubectl {
    Kubectl::new(
        scratch_dir(tag),
        &server.url(),
        server.ca_pem(),
        server.admin_token(),
    )
}

struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs kubectl with `stdin` as its input, killing it after [`TIMEOUT`].
fn run(k: &Kubectl, env: &[(&str, &str)], args: &[&str], stdin: &[u8]) -> Output {
    let mut cmd = k.command();
    cmd.args(args).envs(env.iter().copied());
    run_command(cmd, Some(stdin))
}

/// Runs `cmd` to completion, killing it after [`TIMEOUT`]. Its stdin is a pipe: with
/// `Some(bytes)` they are written and the pipe closed; with `None` the pipe stays open,
/// silent, until the command has exited.
fn run_command(mut cmd: Command, stdin: Option<&[u8]>) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let shown = format!("{cmd:?}");
    let mut child = Killed(cmd.spawn().expect("the command runs"));
    let input = child.0.stdin.take().expect("piped");
    // Held until the end when there is nothing to write, and dropped after it.
    let _held = match stdin {
        Some(stdin) => {
            let stdin = stdin.to_vec();
            let mut input = input;
            std::thread::spawn(move || {
                let _ = input.write_all(&stdin);
            });
            None
        }
        None => Some(input),
    };
    let pipe = |mut r: Box<dyn Read + Send>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            let _ = tx.send(s);
        });
        rx
    };
    let out = pipe(Box::new(child.0.stdout.take().expect("piped")));
    let err = pipe(Box::new(child.0.stderr.take().expect("piped")));
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "{shown} timed out");
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        code: status.code(),
        stdout: out.recv_timeout(TIMEOUT).unwrap_or_default(),
        stderr: err.recv_timeout(TIMEOUT).unwrap_or_default(),
    }
}

/// The `upgrade` header of every request to `pods/web-0/<sub>` since `from` whose query
/// contains `query`.
fn upgrades(server: &Handle, from: usize, sub: &str, query: &str) -> Vec<String> {
    let suffix = format!("/pods/web-0/{sub}");
    server.requests()[from..]
        .iter()
        .filter(|r| r.path.ends_with(&suffix) && r.query.contains(query))
        .map(|r| {
            r.headers
                .iter()
                .find(|(k, _)| k == "upgrade")
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        })
        .collect()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("test body")
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_exec_over_websocket_and_spdy() {
    let server = Arc::new(ApiServer::start(Config::default()).await.unwrap());
    let k = kubectl(&server, "streams-exec");
    let s = server.clone();
    blocking(move || {
        // Longer than client-go's 5 s heartbeats (WebSocket ping, SPDY PING), on both
        // protocols at once. (client-go only logs a missing SPDY PING reply; the
        // session unit test checks the echo itself.)
        let k = Arc::new(k);
        let long: Vec<_> = [&[][..], &[SPDY_EXEC][..]]
            .into_iter()
            .map(|env| {
                let k = k.clone();
                std::thread::spawn(move || {
                    let started = Instant::now();
                    let out = run(&k, env, &["exec", "web-0", "--", "sleep", "6"], b"");
                    (out.code, started.elapsed(), out.stderr)
                })
            })
            .collect();
        for (env, upgrade) in [(&[][..], "websocket"), (&[SPDY_EXEC][..], "SPDY/3.1")] {
            let from = s.requests().len();
            let out = run(&k, env, &["exec", "-i", "web-0", "--", "cat"], b"hello\n");
            assert_eq!(
                (out.code, out.stdout.as_str()),
                (Some(0), "hello\n"),
                "{upgrade}: {}",
                out.stderr
            );
            // One request, on the intended protocol: no silent fallback to SPDY.
            assert_eq!(upgrades(&s, from, "exec", "command=cat"), [upgrade]);

            let out = run(&k, env, &["exec", "web-0", "--", "echo", "a", "b"], b"");
            assert_eq!(
                (out.code, out.stdout.as_str()),
                (Some(0), "a b\n"),
                "{upgrade}"
            );
            let out = run(&k, env, &["exec", "web-0", "--", "hostname"], b"");
            assert_eq!(out.stdout, "web-0\n", "{upgrade}");

            let out = run(&k, env, &["exec", "web-0", "--", "false"], b"");
            assert_eq!(out.code, Some(1), "{upgrade}: {}", out.stderr);
            let out = run(&k, env, &["exec", "web-0", "--", "sh", "-c", "exit 3"], b"");
            assert_eq!(out.code, Some(3), "{upgrade}: {}", out.stderr);
            assert!(
                out.stderr.contains("command terminated with exit code 3"),
                "{upgrade}: {}",
                out.stderr
            );
            let script = "echo out; echo oops >&2; nosuch; exit 2";
            let out = run(&k, env, &["exec", "web-0", "--", "sh", "-c", script], b"");
            assert_eq!(
                (out.code, out.stdout.as_str()),
                (Some(2), "out\n"),
                "{upgrade}"
            );
            assert!(
                out.stderr.starts_with("oops\nsh: 1: nosuch: not found\n"),
                "{upgrade}: {}",
                out.stderr
            );

            let out = run(&k, env, &["exec", "web-0", "--", "nosuch"], b"");
            assert_eq!(out.code, Some(1), "{upgrade}");
            assert!(
                out.stderr.contains("Internal error occurred")
                    && out
                        .stderr
                        .contains("exec: \"nosuch\": executable file not found in $PATH: unknown"),
                "{upgrade}: {}",
                out.stderr
            );
        }
        for handle in long {
            let (code, took, stderr) = handle.join().unwrap();
            assert_eq!(code, Some(0), "{stderr}");
            assert!(took >= Duration::from_secs(6), "{took:?}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_exec_with_a_terminal() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let k = kubectl(&server, "streams-tty");
    blocking(move || {
        // kubectl -t insists on a terminal: `script` runs it on a pty of a known size,
        // which kubectl sends on the resize stream before anything else. script's stdin
        // stays open: at its EOF script would type ^D into the pty, kubectl would send
        // it as stdin, and if that write meets the connection the server has just
        // closed, client-go logs "broken pipe" into the output (as it does against a
        // real kubelet; a race in the client, not in the server).
        for env in ["", "KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false "] {
            let line = format!(
                "stty cols 100 rows 30; {env}kubectl --kubeconfig '{}' exec -it web-0 -- stty size",
                k.config.display()
            );
            let mut cmd = Command::new("script");
            cmd.args(["-qec", &line, "/dev/null"]);
            let out = run_command(cmd, None);
            assert_eq!(
                (out.code, out.stdout.as_str()),
                (Some(0), "30 100\r\n"),
                "{env}{}",
                out.stderr
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_attach_over_websocket_and_spdy() {
    let server = Arc::new(ApiServer::start(Config::default()).await.unwrap());
    let k = kubectl(&server, "streams-attach");
    let s = server.clone();
    blocking(move || {
        for (env, upgrade) in [(&[][..], "websocket"), (&[SPDY_EXEC][..], "SPDY/3.1")] {
            let from = s.requests().len();
            let out = run(&k, env, &["attach", "-i", "web-0"], b"one\ntwo\n");
            assert_eq!(
                (out.code, out.stdout.as_str()),
                (Some(0), "one\ntwo\n"),
                "{upgrade}: {}",
                out.stderr
            );
            assert_eq!(upgrades(&s, from, "attach", ""), [upgrade]);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_logs() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let k = kubectl(&server, "streams-logs");
    blocking(move || {
        let all: String = (1..=10).map(|i| format!("line {i}\n")).collect();
        assert_eq!(k.ok(&["logs", "web-0"]), all);
        assert_eq!(k.ok(&["logs", "web-0", "--tail=2"]), "line 9\nline 10\n");
        assert_eq!(
            k.ok(&["logs", "web-0", "--tail=1", "--timestamps"]),
            "2026-01-01T00:00:10.000000000Z line 10\n"
        );
        assert_eq!(k.ok(&["logs", "web-0", "--limit-bytes=10"]), "line 1\nlin");
        let (ok, _, err) = k.run(&["logs", "web-0", "--previous"]);
        assert!(
            !ok && err.contains("previous terminated container \"app\" in pod \"web-0\" not found"),
            "{err}"
        );
        let (ok, _, err) = k.run(&["logs", "web-0", "-c", "nope"]);
        assert!(
            !ok && err.contains("container nope is not valid for pod web-0"),
            "{err}"
        );

        // Follow: the lines after the tail arrive one by one, as they are written.
        let mut child = Killed(
            k.command()
                .args(["logs", "-f", "web-0", "--tail=1"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let (tx, lines) = mpsc::channel();
        let stdout = child.0.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send((line, Instant::now())).is_err() {
                    return;
                }
            }
        });
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(
                lines
                    .recv_timeout(Duration::from_secs(10))
                    .expect("a log line"),
            );
        }
        let texts: Vec<&str> = got.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(texts, ["line 10", "line 11", "line 12", "line 13"]);
        // Streamed, not buffered: line 13 came two intervals after line 11.
        assert!(got[3].1 - got[1].1 >= Duration::from_millis(300), "{got:?}");
        drop(child);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_port_forward_over_websocket_and_spdy() {
    let server = Arc::new(ApiServer::start(Config::default()).await.unwrap());
    let k = kubectl(&server, "streams-pf");
    let s = server.clone();
    blocking(move || {
        for (env, upgrade) in [
            (&[][..], "websocket"),
            (&[SPDY_PORT_FORWARD][..], "SPDY/3.1"),
        ] {
            let from = s.requests().len();
            let (child, port) = port_forward(&k, env, "web-0", 8080);
            // Two connections in turn, then two at once: each is its own stream pair.
            assert_eq!(echo_round_trip(port, b"ping\n"), b"ping\n", "{upgrade}");
            let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
            assert_eq!(echo_round_trip(port, &big), big, "{upgrade}");
            let a = std::thread::spawn(move || echo_round_trip(port, b"first"));
            let b = std::thread::spawn(move || echo_round_trip(port, b"second"));
            assert_eq!(a.join().unwrap(), b"first");
            assert_eq!(b.join().unwrap(), b"second");
            drop(child);
            assert_eq!(upgrades(&s, from, "portforward", ""), [upgrade]);
        }
    })
    .await;
}

/// A `hostNetwork` pod's ports are the node's: port-forward reaches what listens on
/// the double's `localhost` (here a server that answers in upper case, not an echo),
/// and a port with nothing listening fails with the kubelet's message on the error
/// stream, which kubectl prints; over kubectl's WebSocket tunnel and over SPDY.
#[tokio::test(flavor = "multi_thread")]
async fn port_forward_to_a_host_network_pod_reaches_the_node() {
    use std::net::{TcpListener, TcpStream};
    let server = Arc::new(ApiServer::start(Config::default()).await.unwrap());
    server
        .create(
            "pods",
            "demo",
            serde_json::json!({"kind": "Pod", "apiVersion": "v1",
                "metadata": {"name": "agent-0"},
                "spec": {"nodeName": "node-1", "hostNetwork": true,
                         "containers": [{"name": "agent", "image": "kgate"}]},
                "status": {"phase": "Running"}}),
        )
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let node_port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = [0; 1024];
                while let Ok(n @ 1..) = conn.read(&mut buf) {
                    let _ = conn.write_all(&buf[..n].to_ascii_uppercase());
                }
            });
        }
    });
    // A port nothing listens on: bound, then closed.
    let dead_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let k = kubectl(&server, "streams-pf-host");
    blocking(move || {
        for (env, name) in [
            (&[][..], "websocket"),
            (&[SPDY_PORT_FORWARD][..], "SPDY/3.1"),
        ] {
            let (child, port) = port_forward(&k, env, "agent-0", node_port);
            let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
            conn.set_read_timeout(Some(TIMEOUT)).unwrap();
            conn.write_all(b"hello node").unwrap();
            let mut back = [0; 10];
            conn.read_exact(&mut back).unwrap();
            assert_eq!(&back, b"HELLO NODE", "{name}: the node's server answered");
            drop(conn);
            drop(child);

            let (mut child, port) = port_forward(&k, env, "agent-0", dead_port);
            let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
            conn.set_read_timeout(Some(TIMEOUT)).unwrap();
            let _ = conn.write_all(b"anyone?");
            let mut rest = Vec::new();
            let _ = conn.read_to_end(&mut rest);
            assert!(rest.is_empty(), "{name}: nothing answers");
            drop(conn);
            let mut stderr = child.0.stderr.take().unwrap();
            std::thread::sleep(Duration::from_millis(500));
            drop(child);
            let mut err = String::new();
            let _ = stderr.read_to_string(&mut err);
            let want = format!(
                "error forwarding port {dead_port} to pod {{uid}}, uid : failed to connect to localhost:{dead_port} inside namespace"
            );
            let uid = server.get("pods", "demo", "agent-0").unwrap()["metadata"]["uid"]
                .as_str()
                .unwrap()
                .to_owned();
            let want = want.replace("{uid}", &uid);
            assert!(err.contains(&want), "{name}: {err}");
            assert!(err.contains("connect: connection refused"), "{name}: {err}");
        }
    })
    .await;
}
