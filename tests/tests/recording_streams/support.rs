//! What the stream recording tests share: an agent with a record log, polling it, the
//! `kgate` CLI, and reading an asciicast.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use kgate::record::{event::Event, replay::Recording, sessions};
use kgate_tests::{
    apiserver::{ApiServer, Config, Handle},
    harness::{Agent, Kubectl, ScratchDir, kgate_bin, scratch_dir},
};
use serde_json::Value;

/// The double, an agent in front of it recording into a fresh log, and kubectl
/// talking to the agent as the admin.
pub(crate) struct Rig {
    /// Serves as long as the rig lives.
    _server: Handle,
    pub records: PathBuf,
    pub agent: Agent,
    pub kubectl: Kubectl,
    /// Holds `records`.
    _dir: ScratchDir,
}

impl Rig {
    pub(crate) async fn start(tag: &str) -> Self {
        let server = ApiServer::start(Config::default()).await.unwrap();
        let dir = scratch_dir(tag);
        let records = dir.join("records");
        let agent = recording_agent(&server, &records);
        let kubectl = Kubectl::new(
            scratch_dir(&format!("{tag}-kubectl")),
            &agent.url(),
            &agent.ca_pem,
            server.admin_token(),
        );
        Self {
            _server: server,
            records,
            agent,
            kubectl,
            _dir: dir,
        }
    }
}

/// An agent with a record log, in front of `server`.
pub(crate) fn recording_agent(server: &Handle, records: &Path) -> Agent {
    Agent::standalone_with(
        &server.url(),
        server.ca_pem(),
        server.admin_token(),
        &format!(
            "identity: {{unboundSubjects: [kubernetes-admin]}}\n\
             policy: {{defaultAction: allow}}\n\
             record: {{dir: '{}', durability: batch, flushMillis: 100}}\n",
            records.display()
        ),
    )
    .unwrap()
}

/// Polls the log until `done` holds for its recordings.
pub(crate) fn recordings_until(dir: &Path, done: impl Fn(&[Recording]) -> bool) -> Vec<Recording> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let loaded = sessions::load_all(dir).unwrap();
        if done(&loaded.recordings) || Instant::now() > deadline {
            return loaded.recordings;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn kgate(args: &[&str]) -> Output {
    let out = Command::new(kgate_bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "kgate {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The session whose requests include `audit_id`.
pub(crate) fn session_of(dir: &Path, audit_id: &str) -> String {
    let (events, _) = sessions::load(dir).unwrap();
    sessions::sessions(events)
        .into_iter()
        .find(|s| s.events.iter().any(|e| e.audit_id == audit_id))
        .expect("the stream's request is in a session")
        .id
}

/// Polls the log until `done` holds for its audit events.
pub(crate) fn events_until(dir: &Path, done: impl Fn(&[Event]) -> bool) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (events, _) = sessions::load(dir).unwrap();
        if done(&events) || Instant::now() > deadline {
            return events;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An asciicast v2 file: its header and its events.
pub(crate) fn asciicast(text: &str) -> (Value, Vec<Value>) {
    let mut lines = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap());
    let header = lines.next().expect("a header line");
    (header, lines.collect())
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
