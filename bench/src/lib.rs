//! kgate's benchmark harness: kgate side by side with direct access to the same API
//! server and with nginx as a plain TLS reverse proxy, in one run. Two front ends use
//! it: `cargo xtask bench` on loopback in front of the project's API-server double
//! (xtask starts and seeds the double and adds the rows that need its data), and
//! `kgate bench --upstream` in front of the user's own API server ([`upstream`]).
//! docs/bench.md says what each row means and how to read it.
//!
//! Here: the load generator ([`load`], [`client`]), the latency, saturation and
//! connection rows ([`latency`], [`conns`]), the proxies' CPU and memory
//! ([`procstat`]), the report ([`report`]), the children the bench runs ([`child`],
//! [`agent`], [`nginx`]) and the serving certificate they present ([`pki`]).
//!
//! Not here: the API-server double, seeding it, the masking and scale rows (xtask),
//! timed assertions (the goals are reported, never enforced). Errors are `anyhow`
//! chains: every one ends the run and goes straight to the person who started it.

pub mod agent;
pub mod child;
pub mod client;
pub mod conns;
pub mod latency;
pub mod load;
pub mod nginx;
pub mod pki;
pub mod procstat;
pub mod report;
pub mod targets;
pub mod upstream;

use std::time::Duration;

use client::{Get, Target};

/// The parts of a run, for `--only`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    Latency,
    Saturation,
    Connections,
    Masking,
    Identity,
    /// 1,000 watches through one agent; 20 concurrent 20 MB LISTs.
    Scale,
    /// Making one record durable: the disk, the log, the writer thread.
    Record,
}

/// What every scenario needs: the ways to the API server, the request, the load.
pub struct Setup {
    pub direct: Target,
    /// `None`: nginx is not installed (upstream mode); its rows are left out.
    pub nginx: Option<Target>,
    /// kgate as deployed by default: strict recording.
    pub kgate: Target,
    /// kgate with batch recording: the difference is what fsync-before-forward costs.
    pub kgate_batch: Target,
    pub nginx_pid: Option<u32>,
    pub kgate_pid: u32,
    pub kgate_batch_pid: u32,
    /// The GET every latency row sends, as the bot.
    pub get: Get,
    /// The PATCH of the write rows, as the bot (loopback only).
    pub write: Option<Get>,
    pub bot_token: String,
    /// The API server's admin token (the scale rows write with it, directly); empty
    /// in upstream mode.
    pub admin_token: String,
    pub seconds: u64,
    pub quick: bool,
    /// (count, bytes each) of the bulk Secrets (the masking rows; none upstream).
    pub bulk: (usize, usize),
    /// Idle connections of the connection-memory row.
    pub idle: usize,
    /// Busy connections of the connection-memory row.
    pub busy: usize,
    /// Arrival rates of the open-loop rows, req/s.
    pub rates: Vec<u32>,
    /// Workers of the closed-loop (saturation) rows.
    pub saturation_concurrency: usize,
}

impl Setup {
    /// Every way to the API server, direct first (the baseline of each comparison).
    pub fn targets(&self) -> Vec<&Target> {
        let mut all = vec![&self.direct];
        all.extend(&self.nginx);
        all.extend([&self.kgate, &self.kgate_batch]);
        all
    }

    /// Direct, nginx (when there is one) and kgate: the rows where kgate-batch would
    /// repeat kgate (one record per read).
    pub fn ways(&self) -> Vec<&Target> {
        let mut ways = vec![&self.direct];
        ways.extend(&self.nginx);
        ways.push(&self.kgate);
        ways
    }

    /// The proxy process behind a target (none for direct).
    pub fn pid(&self, target: &Target) -> Option<u32> {
        match target.via {
            "nginx" => self.nginx_pid,
            "kgate" => Some(self.kgate_pid),
            "kgate-batch" => Some(self.kgate_batch_pid),
            _ => None,
        }
    }

    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.seconds)
    }
}

/// Progress for the slow steps, on stderr (stdout is the report).
pub fn step(what: &str) {
    eprintln!("\x1b[1mbench:\x1b[0m {what}");
}
