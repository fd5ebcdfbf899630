//! `kgate sessions` without `--dir`: every node's sessions, asked from the agents
//! through the API server with the admin's kubeconfig ([`crate::cluster_sessions`]).
//! The list prints each session as the merge yields it, with a NODE column; a node
//! that does not answer is named on stderr (and under `unreachable` in `-o json`), and
//! the exit code is then [`PARTIAL`].
//!
//! Not here: reaching the agents, or the offline log (`--dir`, [`super`]).

use std::{io::Write as _, path::PathBuf};

use anyhow::Context as _;
use jiff::Timestamp;

use crate::{
    cluster_sessions::{Cluster, Item, Options, Unreachable},
    record::replay::Pace,
};

/// The exit code of a list that lacks a node's sessions (a node did not answer).
pub(crate) const PARTIAL: u8 = 3;

/// How to reach the agents (ignored with `--dir`).
#[derive(clap::Args)]
pub(in crate::cli) struct Args {
    /// Only the sessions of this node.
    #[arg(long)]
    node: Option<String>,
    /// The agents' namespace (their heartbeat Leases and pods).
    #[arg(long, short = 'n', default_value = "kgate-system")]
    namespace: String,
    /// A bearer token to present to the agents instead of the kubeconfig's (which must
    /// hold a token, a token file or an exec plugin; client certificates cannot be
    /// passed on).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Trust agents whose serving certificate chains to this CA, instead of pinning
    /// the certificate their heartbeat Lease names.
    #[arg(long)]
    ca_file: Option<PathBuf>,
}

/// What `replay` writes.
pub(super) enum To {
    /// The terminal output, paced (from the stream's asciicast).
    Play(Pace),
    /// Asciicast v2 to a file (`-`: stdout).
    Asciicast(PathBuf),
    /// The captured frames as JSON.
    Json,
}

fn connect(args: Args) -> impl Future<Output = anyhow::Result<Cluster>> {
    let options = Options {
        namespace: args.namespace,
        token_file: args.token_file,
        ca_file: args.ca_file,
        node: args.node,
    };
    async move { Ok(Cluster::connect(options).await?) }
}

/// `kgate sessions list` across the cluster.
pub(super) fn list(
    args: Args,
    user: Option<String>,
    pod: Option<String>,
    since: Option<Timestamp>,
    json: bool,
) -> anyhow::Result<()> {
    let mut query = Vec::new();
    query.extend(user.map(|u| ("user", u)));
    query.extend(pod.map(|p| ("pod", p)));
    query.extend(since.map(|s| ("since", s.to_string())));
    let runtime = super::super::runtime()?;
    let unreachable = runtime.block_on(async move {
        let cluster = connect(args).await?;
        let mut listing = cluster.list(&query).await?;
        let (mut unreachable, mut sessions) = (Vec::<Unreachable>::new(), Vec::new());
        let mut stdout = std::io::stdout().lock();
        if !json {
            write!(stdout, "{:<20} {}", "NODE", super::list_header())?;
        }
        while let Some(item) = listing.next().await {
            match item {
                Item::Session { node, session } if json => {
                    let mut value = serde_json::to_value(&session)?;
                    value["node"] = node.into();
                    sessions.push(value);
                }
                Item::Session { node, session } => {
                    write!(stdout, "{node:<20} {}", super::list_row(&session))?;
                    stdout.flush()?;
                }
                Item::Unreachable(u) => {
                    eprintln!("kgate: node {} did not answer: {}", u.node, u.error);
                    unreachable.push(u);
                }
            }
        }
        if json {
            let out = serde_json::json!({"sessions": sessions, "unreachable": unreachable});
            writeln!(stdout, "{}", serde_json::to_string_pretty(&out)?)?;
        }
        anyhow::Ok(unreachable)
    })?;
    partial(&unreachable)
}

/// The error that exits [`PARTIAL`], when a node did not answer.
fn partial(unreachable: &[Unreachable]) -> anyhow::Result<()> {
    if unreachable.is_empty() {
        return Ok(());
    }
    let nodes: Vec<&str> = unreachable.iter().map(|u| u.node.as_str()).collect();
    Err(super::super::Exit {
        code: PARTIAL,
        message: format!(
            "partial list: no sessions from {} (see above)",
            nodes.join(", ")
        ),
    }
    .into())
}

/// `kgate sessions show` of a session on whichever node has it.
pub(super) fn show(args: Args, id: &str, json: bool) -> anyhow::Result<()> {
    let runtime = super::super::runtime()?;
    let (node, mut session, events) = runtime.block_on(async move {
        let cluster = connect(args).await?;
        anyhow::Ok(cluster.events(id).await?)
    })?;
    if json {
        for event in &events {
            println!("{}", serde_json::to_string(event)?);
        }
        return Ok(());
    }
    session.events = events;
    println!("Node     {node}");
    print!("{}", super::show_timeline(&session));
    print!("{}", super::show_streams(&session));
    Ok(())
}

/// `kgate sessions replay` of a session on whichever node has it.
pub(super) fn replay(args: Args, id: &str, stream: Option<&str>, to: To) -> anyhow::Result<()> {
    let runtime = super::super::runtime()?;
    let json = matches!(to, To::Json);
    let (_, bytes) = runtime.block_on(async move {
        let cluster = connect(args).await?;
        anyhow::Ok(if json {
            cluster.recording(id, stream, true).await?
        } else {
            cluster.asciicast(id, stream).await?
        })
    })?;
    match to {
        To::Json => std::io::stdout().write_all(&bytes)?,
        To::Asciicast(path) if path.as_os_str() == "-" => std::io::stdout().write_all(&bytes)?,
        To::Asciicast(path) => std::fs::write(&path, &bytes)
            .with_context(|| format!("--asciicast {}", path.display()))?,
        To::Play(pace) => play(&bytes, pace, &mut std::io::stdout().lock())?,
    }
    Ok(())
}

/// Plays an asciicast's output events at `pace`. Its stdout and stderr are one
/// stream there (asciicast has no stderr), so both come out on `out`.
fn play(cast: &[u8], pace: Pace, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    let mut at = 0.0;
    for line in cast.split(|b| *b == b'\n').skip(1) {
        let Ok(serde_json::Value::Array(event)) = serde_json::from_slice(line) else {
            continue;
        };
        let (Some(t), Some("o"), Some(text)) = (
            event.first().and_then(serde_json::Value::as_f64),
            event.get(1).and_then(serde_json::Value::as_str),
            event.get(2).and_then(serde_json::Value::as_str),
        ) else {
            continue;
        };
        if pace.speed > 0.0 {
            let mut wait = std::time::Duration::try_from_secs_f64((t - at).max(0.0) / pace.speed)
                .unwrap_or(std::time::Duration::MAX);
            if let Some(max) = pace.max_idle {
                wait = wait.min(max);
            }
            std::thread::sleep(wait);
        }
        at = t;
        out.write_all(text.as_bytes())?;
        out.flush()?;
    }
    Ok(())
}
