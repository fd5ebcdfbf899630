//! The fake container's programs: what `exec` runs and what `attach` reaches. They
//! only see byte channels (stdin in, stdout/stderr out, terminal sizes), so every
//! transport drives them the same way.
//!
//! Programs: `echo [-n] ARGS`, `cat` (stdin to stdout until EOF), `true`, `false`,
//! `env`/`printenv`, `sleep SECS`, `hostname` (the pod name), `stty size` (the last
//! resize the client sent; needs a TTY), and `sh -c SCRIPT` (also `bash`), whose script
//! is `;`-separated simple commands from that list plus `exit N`, with `>&2` to send a
//! command's output to stderr; an unknown command in a script prints `sh: 1: X: not
//! found` and exits 127, as dash does. Executing an unknown program fails to start,
//! with containerd's error. Attach reaches a main process that echoes its stdin.
//!
//! Not here: pipes, variables, other redirections, a terminal's input echo and line
//! editing. A TTY only merges stderr into stdout and turns `\n` into `\r\n` (onlcr).

use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::{mpsc, watch};

use super::Pod;

/// How a program ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Exit {
    Code(i32),
    /// The runtime could not start it (containerd's message).
    StartFailed(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fd {
    Stdout,
    Stderr,
}

/// What runs: an exec'd command line, or the container's main process (attach).
#[derive(Clone, Debug)]
pub(super) enum Program {
    Exec(Vec<String>),
    Attach,
}

/// A terminal size as client-go sends it on the resize channel.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub(super) struct Size {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// The program's side of the streams.
pub(super) struct Io {
    /// `None` when the client did not ask for stdin (the program reads EOF).
    pub stdin: Option<mpsc::UnboundedReceiver<Bytes>>,
    pub out: Output,
    pub size: watch::Receiver<Option<Size>>,
}

/// Where a program writes; dropping every clone tells the transport it is done.
#[derive(Clone)]
pub(super) struct Output {
    tx: mpsc::Sender<(Fd, Bytes)>,
    tty: bool,
}

impl Output {
    pub(super) fn new(tty: bool) -> (Self, mpsc::Receiver<(Fd, Bytes)>) {
        let (tx, rx) = mpsc::channel(16);
        (Self { tx, tty }, rx)
    }

    /// `false` once the transport is gone.
    async fn write(&self, fd: Fd, data: &[u8]) -> bool {
        if self.tty {
            // A pty has one output, and its line discipline maps NL to CR NL.
            let mapped = String::from_utf8_lossy(data).replace('\n', "\r\n");
            return self.tx.send((Fd::Stdout, mapped.into())).await.is_ok();
        }
        self.tx
            .send((fd, Bytes::copy_from_slice(data)))
            .await
            .is_ok()
    }
}

/// Reassembles the JSON sizes of a resize stream, which may arrive split or batched.
#[derive(Default)]
pub(super) struct ResizeDecoder {
    buf: Vec<u8>,
}

impl ResizeDecoder {
    /// Feeds bytes; returns the last complete size among them.
    pub(super) fn push(&mut self, data: &[u8]) -> Option<Size> {
        self.buf.extend_from_slice(data);
        let mut last = None;
        let mut used = 0;
        let mut sizes = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Size>();
        while let Some(Ok(size)) = sizes.next() {
            last = Some(size);
            used = sizes.byte_offset();
        }
        self.buf.drain(..used);
        last
    }
}

pub(super) async fn run(program: &Program, pod: &Pod, tty: bool, mut io: Io) -> Exit {
    match program {
        Program::Attach => attach(&mut io).await,
        Program::Exec(argv) => exec(argv, pod, tty, &mut io).await,
    }
}

/// The main process: echoes whatever arrives on stdin. containerd ends a non-TTY
/// attach when the client's stdin closes; without stdin it lasts until the client goes.
async fn attach(io: &mut Io) -> Exit {
    let Some(stdin) = io.stdin.as_mut() else {
        return std::future::pending().await;
    };
    while let Some(chunk) = stdin.recv().await {
        if !io.out.write(Fd::Stdout, &chunk).await {
            break;
        }
    }
    Exit::Code(0)
}

async fn exec(argv: &[String], pod: &Pod, tty: bool, io: &mut Io) -> Exit {
    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
    if let [shell, "-c", script, ..] = args.as_slice()
        && matches!(base(shell), Some("sh" | "bash"))
    {
        return Exit::Code(script_status(script, pod, tty, io).await);
    }
    match builtin(&args, Fd::Stdout, pod, tty, io).await {
        Some(code) => Exit::Code(code),
        None => Exit::StartFailed(format!(
            "failed to start exec \"{}\": OCI runtime exec failed: exec failed: unable to start container process: exec: \"{}\": executable file not found in $PATH: unknown",
            exec_id(),
            args.first().unwrap_or(&"")
        )),
    }
}

async fn script_status(script: &str, pod: &Pod, tty: bool, io: &mut Io) -> i32 {
    let mut last = 0;
    for command in script.split(';') {
        let mut words = split_words(command);
        let fd = if words.last().map(String::as_str) == Some(">&2") {
            words.pop();
            Fd::Stderr
        } else {
            Fd::Stdout
        };
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        last = match words.as_slice() {
            [] => last,
            ["exit"] => return last,
            ["exit", n] => return n.parse::<i32>().map_or(2, |n| n & 0xff),
            _ => match builtin(&words, fd, pod, tty, io).await {
                Some(code) => code,
                None => {
                    let msg = format!("sh: 1: {}: not found\n", words[0]);
                    io.out.write(Fd::Stderr, msg.as_bytes()).await;
                    127
                }
            },
        };
    }
    last
}

/// Runs a known program, `None` for an unknown one.
async fn builtin(args: &[&str], fd: Fd, pod: &Pod, tty: bool, io: &mut Io) -> Option<i32> {
    let out = &io.out;
    let code = match (base(args.first()?)?, &args[1..]) {
        ("echo", ["-n", rest @ ..]) => i32::from(!out.write(fd, rest.join(" ").as_bytes()).await),
        ("echo", rest) => i32::from(
            !out.write(fd, format!("{}\n", rest.join(" ")).as_bytes())
                .await,
        ),
        ("true", _) => 0,
        ("false", _) => 1,
        ("hostname", []) => i32::from(!out.write(fd, format!("{}\n", pod.name).as_bytes()).await),
        ("env" | "printenv", []) => {
            let mut env = format!(
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nHOSTNAME={}\n",
                pod.name
            );
            if tty {
                env.push_str("TERM=xterm\n");
            }
            for (k, v) in &pod.env {
                env.push_str(&format!("{k}={v}\n"));
            }
            env.push_str(
                "KUBERNETES_SERVICE_HOST=10.96.0.1\nKUBERNETES_SERVICE_PORT=443\nHOME=/root\n",
            );
            i32::from(!out.write(fd, env.as_bytes()).await)
        }
        ("sleep", [secs]) => match secs.parse::<f64>() {
            Ok(s) if s.is_finite() && s >= 0.0 => {
                tokio::time::sleep(Duration::from_secs_f64(s)).await;
                0
            }
            _ => {
                let msg = format!("sleep: invalid time interval '{secs}'\n");
                out.write(Fd::Stderr, msg.as_bytes()).await;
                1
            }
        },
        ("stty", ["size"]) => {
            if !tty {
                let msg = "stty: 'standard input': Inappropriate ioctl for device\n";
                out.write(Fd::Stderr, msg.as_bytes()).await;
                return Some(1);
            }
            // client-go sends the first size as soon as the streams are up; give it a
            // moment, as the size of a real pty is set before the process starts.
            let mut size = io.size.clone();
            let _ =
                tokio::time::timeout(Duration::from_secs(2), size.wait_for(Option::is_some)).await;
            let (rows, cols) = size.borrow().map_or((0, 0), |s| (s.height, s.width));
            i32::from(!out.write(fd, format!("{rows} {cols}\n").as_bytes()).await)
        }
        ("cat", [] | ["-"]) => {
            if let Some(stdin) = io.stdin.as_mut() {
                while let Some(chunk) = stdin.recv().await {
                    if !io.out.write(fd, &chunk).await {
                        return Some(1);
                    }
                }
            }
            0
        }
        _ => return None,
    };
    Some(code)
}

/// The program name of `path`, if it is a bare name or lives where the image has it.
fn base(path: &str) -> Option<&str> {
    match path.rsplit_once('/') {
        None => Some(path),
        Some(("/bin" | "/usr/bin" | "/usr/local/bin", name)) => Some(name),
        Some(_) => None,
    }
}

/// Splits a command into words, honouring single and double quotes.
fn split_words(command: &str) -> Vec<String> {
    let (mut words, mut word, mut quote, mut started) = (Vec::new(), String::new(), None, false);
    for c in command.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '\'' | '"') => {
                quote = Some(c);
                started = true;
            }
            (None, c) if c.is_whitespace() => {
                if started || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                started = false;
            }
            (_, c) => word.push(c),
        }
    }
    if started || !word.is_empty() {
        words.push(word);
    }
    words
}

/// A containerd-style exec id (64 hex digits).
fn exec_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    (0..4)
        .map(|i| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(i);
            format!("{:016x}", h.finish())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_resizes() {
        assert_eq!(
            split_words(r#"echo "a  b" 'c' d"#),
            ["echo", "a  b", "c", "d"]
        );
        assert_eq!(split_words(" exit  3 "), ["exit", "3"]);
        let mut d = ResizeDecoder::default();
        assert_eq!(d.push(br#"{"Width":80,"Hei"#), None);
        assert_eq!(
            d.push(br#"ght":24}{"Width":100,"Height":30}"#),
            Some(Size {
                width: 100,
                height: 30
            })
        );
        assert_eq!(base("/bin/echo"), Some("echo"));
        assert_eq!(base("/opt/echo"), None);
    }
}
