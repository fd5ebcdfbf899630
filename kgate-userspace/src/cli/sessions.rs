//! `kgate sessions list`, `show` and `replay`: the record log read as sessions, printed
//! as tables and a timeline, or a captured exec/attach stream played back (at recorded
//! speed, as asciicast v2, or as JSON). Damage found in the log is a warning on
//! stderr, never an error: what can be read is shown.
//!
//! With `--dir` (or `KGATE_RECORD_DIR`) the log is read from disk, on the node; without
//! it every node's agent is asked through the API server ([`cluster`]).
//!
//! Not here: grouping records into sessions ([`crate::record::sessions`]) and joining
//! or replaying a stream's frames ([`crate::record::replay`]).

mod cluster;

use std::{fmt::Write as _, path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::Subcommand;
use jiff::{Timestamp, tz::TimeZone};

use crate::record::{
    event,
    log::Damage,
    replay,
    sessions::{self, Filter, Session},
};

#[derive(Subcommand)]
pub(super) enum SessionsCommand {
    /// Every session, oldest first: every node's (through the API server, with a NODE
    /// column; exits 3 when a node did not answer), or with `--dir` one record log's.
    List {
        /// The record log directory (`record.dir`, on the node); without it, every
        /// node's agent is asked.
        #[arg(long, env = "KGATE_RECORD_DIR")]
        dir: Option<PathBuf>,
        #[command(flatten)]
        cluster: cluster::Args,
        /// Only sessions of users matching this glob.
        #[arg(long)]
        user: Option<String>,
        /// Only sessions from pods (`NAMESPACE/NAME`) matching this glob, or refused
        /// for using a token bound to such a pod (a stolen token).
        #[arg(long)]
        pod: Option<String>,
        /// Only sessions active within this long (90s, 10m, 2h).
        #[arg(long)]
        since: Option<String>,
        /// `json` for the sessions as JSON.
        #[arg(long, short = 'o')]
        output: Option<String>,
    },
    /// A session's requests as a timeline, and the streams they opened.
    Show {
        /// The session ID (or a unique prefix, across nodes).
        id: String,
        /// The record log directory; without it, the node that has the session.
        #[arg(long, env = "KGATE_RECORD_DIR")]
        dir: Option<PathBuf>,
        #[command(flatten)]
        cluster: cluster::Args,
        /// `json` for the session's audit events, one per line.
        #[arg(long, short = 'o')]
        output: Option<String>,
    },
    /// Plays a session's exec or attach stream (stdout and stderr) at recorded speed,
    /// or writes it as asciicast v2 or JSON.
    Replay {
        /// The session ID (or a unique prefix, across nodes).
        id: String,
        /// The record log directory; without it, the node that has the session.
        #[arg(long, env = "KGATE_RECORD_DIR")]
        dir: Option<PathBuf>,
        #[command(flatten)]
        cluster: cluster::Args,
        /// The stream's audit ID (or a unique prefix); needed when the session has
        /// several exec/attach streams (`kgate sessions show` lists them).
        #[arg(long)]
        stream: Option<String>,
        /// Playback speed: 2 is twice as fast, 0 plays without waiting.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Waits longer than this many seconds are cut short.
        #[arg(long)]
        max_idle: Option<f64>,
        /// Write the stream as an asciicast v2 file (`-` for stdout) instead.
        #[arg(long, conflicts_with = "output")]
        asciicast: Option<PathBuf>,
        /// `json` for the stream's captured frames (payloads in base64).
        #[arg(long, short = 'o')]
        output: Option<String>,
    },
}

pub(super) fn run(command: SessionsCommand) -> anyhow::Result<()> {
    match command {
        SessionsCommand::List {
            dir,
            cluster,
            user,
            pod,
            since,
            output,
        } => {
            let json = json(output.as_deref())?;
            let since = since
                .map(|s| {
                    let d = crate::approval::parse_duration(&s)
                        .with_context(|| format!("--since {s:?}: e.g. 90s, 10m, 2h"))?;
                    let d = jiff::SignedDuration::try_from(d)?;
                    anyhow::Ok(Timestamp::now() - d)
                })
                .transpose()?;
            let Some(dir) = dir else {
                return cluster::list(cluster, user, pod, since, json);
            };
            let filter = Filter {
                user: user.as_deref().map(wildmatch::WildMatch::new),
                pod: pod.as_deref().map(wildmatch::WildMatch::new),
                since,
            };
            let (all, damage) = sessions::load_summaries(&dir)?;
            warn(&damage);
            let selected = sessions::select(all, &filter);
            if json {
                println!("{}", serde_json::to_string_pretty(&selected)?);
            } else {
                print!("{}", list_table(&selected));
            }
            Ok(())
        }
        SessionsCommand::Show {
            id,
            dir,
            cluster,
            output,
        } => {
            let json = json(output.as_deref())?;
            let Some(dir) = dir else {
                return cluster::show(cluster, &id, json);
            };
            let (session, _, damage) = sessions::load_session(&dir, &id)?;
            warn(&damage);
            if json {
                for event in &session.events {
                    println!("{}", serde_json::to_string(event)?);
                }
            } else {
                print!("{}", show_timeline(&session));
                print!("{}", show_streams(&session));
            }
            Ok(())
        }
        SessionsCommand::Replay {
            id,
            dir,
            cluster,
            stream,
            speed,
            max_idle,
            asciicast,
            output,
        } => {
            let json = json(output.as_deref())?;
            if !speed.is_finite() || speed < 0.0 {
                anyhow::bail!("--speed {speed}: must be 0 (no waits) or more");
            }
            let max_idle = max_idle
                .map(|s| {
                    Duration::try_from_secs_f64(s)
                        .map_err(|_| anyhow::anyhow!("--max-idle {s}: must be 0 or more seconds"))
                })
                .transpose()?;
            let pace = replay::Pace { speed, max_idle };
            let Some(dir) = dir else {
                let to = if json {
                    cluster::To::Json
                } else if let Some(path) = asciicast {
                    cluster::To::Asciicast(path)
                } else {
                    cluster::To::Play(pace)
                };
                return cluster::replay(cluster, &id, stream.as_deref(), to);
            };
            let (session, recordings, damage) = sessions::load_session(&dir, &id)?;
            warn(&damage);
            let rec = sessions::pick_stream(&session, &recordings, stream.as_deref())?;
            if let Some(error) = &rec.capture_error {
                eprintln!("warning: capture of this stream stopped early: {error}");
            }
            if !rec.missing_chunks.is_empty() {
                eprintln!(
                    "warning: {} chunks of this stream are missing from the log",
                    rec.missing_chunks.len()
                );
            }
            let stdout = std::io::stdout();
            if json {
                println!("{}", serde_json::to_string_pretty(rec)?);
            } else if let Some(path) = asciicast {
                if path.as_os_str() == "-" {
                    replay::asciicast(rec, &mut stdout.lock())?;
                } else {
                    let mut file = std::io::BufWriter::new(
                        std::fs::File::create(&path)
                            .with_context(|| format!("--asciicast {}", path.display()))?,
                    );
                    replay::asciicast(rec, &mut file)?;
                    std::io::Write::flush(&mut file)?;
                }
            } else {
                replay::play(rec, pace, &mut stdout.lock(), &mut std::io::stderr().lock())?;
            }
            Ok(())
        }
    }
}

/// `-o json`, or the default text.
fn json(output: Option<&str>) -> anyhow::Result<bool> {
    match output {
        None => Ok(false),
        Some("json") => Ok(true),
        Some(other) => anyhow::bail!("-o {other:?}: only json is supported"),
    }
}

/// The log's damage, on stderr: what was read is still shown.
fn warn(damage: &[Damage]) {
    for d in damage {
        eprintln!(
            "warning: {}: {} bytes after offset {} unreadable ({}; a write in progress if this is the newest segment)",
            d.segment.display(),
            d.bad_bytes,
            d.good_bytes,
            d.reason
        );
    }
}

/// `kgate sessions list` as a table.
pub(crate) fn list_table(sessions: &[Session]) -> String {
    let mut out = list_header();
    for s in sessions {
        out.push_str(&list_row(s));
    }
    out
}

/// The list's column names (and a newline).
fn list_header() -> String {
    format!(
        "{:<14} {:<40} {:<28} {:<20} {:<20} {:>8} {:>7} {:>7}\n",
        "ID", "USER", "WORKLOAD", "START", "END", "REQUESTS", "REFUSED", "STREAMS"
    )
}

/// One session's row of the list (and a newline).
fn list_row(s: &Session) -> String {
    format!(
        "{:<14} {:<40} {:<28} {:<20} {:<20} {:>8} {:>7} {:>7}\n",
        s.id,
        or_dash(&s.user),
        // A gateway's clients have no workload: their issuer says where they are from.
        s.issuer
            .as_ref()
            .map_or_else(|| or_dash(&s.workload).to_owned(), |i| format!("oidc {i}")),
        seconds(&s.start),
        seconds(&s.end),
        s.requests,
        s.refused,
        s.streams.len()
    )
}

/// `kgate sessions show` as a timeline.
pub(crate) fn show_timeline(session: &Session) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Session {}  user {}  workload {}  ({} requests, {} refused)",
        session.id,
        or_dash(&session.user),
        or_dash(&session.workload),
        session.requests,
        session.refused
    );
    if !session.groups.is_empty() {
        let _ = writeln!(out, "Groups   {}", session.groups.join(", "));
    }
    if let Some(issuer) = &session.issuer {
        let _ = writeln!(out, "Issuer   {issuer} (OIDC)");
    }
    if !session.acting_as.is_empty() {
        let _ = writeln!(out, "Acting as {}", session.acting_as.join(", "));
    }
    let _ = writeln!(
        out,
        "{:<15} {:<16} {:<48} {:>4}  DECISION",
        "TIME", "VERB", "RESOURCE", "CODE"
    );
    for e in &session.events {
        let code = e.code().map_or_else(|| "-".to_owned(), |c| c.to_string());
        let mut decision = e.annotation(event::DECISION).unwrap_or("-").to_owned();
        if let Some(rule) = e.annotation(event::RULE) {
            let _ = write!(decision, " ({rule})");
        }
        if let Some(would) = e.annotation(event::WOULD) {
            let _ = write!(decision, " would {would}");
        }
        if e.stage == event::STAGE_RECEIVED {
            decision.push_str(" [no response recorded]");
        }
        let _ = writeln!(
            out,
            "{:<15} {:<16} {:<48} {:>4}  {decision}",
            clock(&e.request_received_timestamp),
            e.verb,
            e.what(),
            code,
        );
    }
    out
}

/// The streams section of `kgate sessions show` (empty without streams).
fn show_streams(session: &Session) -> String {
    let mut out = String::new();
    if session.streams.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "\nStreams\n{:<36} {:<12} {:<40} {:>9}  CAPTURED",
        "AUDIT ID", "SUBRESOURCE", "TRANSPORT", "SECONDS"
    );
    for s in &session.streams {
        let mut captured = if s.subresource == "portforward" {
            format!("{} port-forward streams", s.port_streams)
        } else {
            let mut parts: Vec<String> = ["stdin", "stdout", "stderr", "resize"]
                .iter()
                .filter_map(|ch| s.bytes.get(*ch).map(|n| format!("{ch} {n} B")))
                .collect();
            if parts.is_empty() {
                parts.push("no data".to_owned());
            }
            parts.join(", ")
        };
        if !s.closed {
            captured.push_str(" [open, or its last chunk is lost]");
        }
        if !s.missing_chunks.is_empty() {
            let _ = write!(captured, " [{} chunks missing]", s.missing_chunks.len());
        }
        if let Some(error) = &s.capture_error {
            let _ = write!(captured, " [capture failed: {error}]");
        }
        let transport = if s.protocol.is_empty() {
            s.transport.clone()
        } else {
            format!("{} {}", s.transport, s.protocol)
        };
        let _ = writeln!(
            out,
            "{:<36} {:<12} {:<40} {:>9.3}  {captured}",
            s.audit_id, s.subresource, transport, s.seconds
        );
    }
    out
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

/// `2026-01-02T03:04:05Z`, in UTC.
fn seconds(ts: &str) -> String {
    ts.parse::<Timestamp>().map_or_else(
        |_| ts.to_owned(),
        |t| {
            t.to_zoned(TimeZone::UTC)
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string()
        },
    )
}

/// `03:04:05.678` (UTC): the timeline's clock.
fn clock(ts: &str) -> String {
    ts.parse::<Timestamp>().map_or_else(
        |_| ts.to_owned(),
        |t| {
            t.to_zoned(TimeZone::UTC)
                .strftime("%H:%M:%S%.3f")
                .to_string()
        },
    )
}
