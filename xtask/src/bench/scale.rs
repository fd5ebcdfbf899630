//! Scale rows: many watches through one agent, and many large LISTs at once.
//!
//! Watches: [`WATCHES`] watches, each on its own ConfigMap (a `metadata.name` field
//! selector), [`PER_CONN`] to an HTTP/2 connection as client-go multiplexes a pod's
//! informers, opened at the same time through direct, nginx and kgate. The proxy's
//! resident memory and CPU are read while they sit idle; then the bench updates the
//! ConfigMaps directly at [`EVENTS_PER_S`] (round-robin), each update carrying its
//! send time, so one update reaches one watch per way and the three latencies are of
//! the same event. Added latency is kgate's (or nginx's) percentile minus direct's.
//!
//! LISTs: [`LISTS`] concurrent LISTs of a namespace holding about [`LIST_MB`] MB of
//! Secrets (100 KiB each), each on its own connection. A proxy that streams keeps its
//! peak extra memory near the largest object per stream; one that buffers answers
//! holds the sum.
//!
//! Not here: watch bookmarks, reconnects, or event bursts.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use serde_json::{Value, json};

use kgate_bench::{
    Setup,
    client::{Conn, Get, Proto, Target, connect, connect_writer},
    load::histogram,
    procstat::{Meter, rss_kib},
    report::Section,
    targets::Findings,
};

/// Concurrent watches per way.
const WATCHES: usize = 1000;
/// Watches per HTTP/2 connection.
const PER_CONN: usize = 10;
/// Updates per second across all watched objects.
const EVENTS_PER_S: u64 = 100;
/// Concurrent LISTs.
const LISTS: usize = 20;
/// Size of each LIST's answer, MB.
const LIST_MB: usize = 20;
/// Namespace of the scale rows' objects.
const NAMESPACE: &str = "scale";

/// Both scale sections.
pub(super) async fn rows(setup: &Setup, findings: &mut Findings) -> anyhow::Result<[Section; 2]> {
    let api = Api::connect(setup).await?;
    api.create_namespace().await?;
    Ok([
        watches(setup, &api, findings).await?,
        lists(setup, &api, findings).await?,
    ])
}

/// Writes to the API server directly, as its admin.
#[derive(Clone)]
struct Api {
    send: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    target: Target,
    token: String,
}

impl Api {
    async fn connect(setup: &Setup) -> anyhow::Result<Self> {
        Ok(Self {
            send: connect_writer(&setup.direct).await?,
            target: setup.direct.clone(),
            token: setup.admin_token.clone(),
        })
    }

    /// Sends one request; `Ok(status)` for any answer.
    async fn call(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<StatusCode> {
        let req = Request::builder()
            .method(method)
            .uri(format!("https://{}{path}", self.target.addr))
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))?;
        let mut send = self.send.clone();
        send.ready().await?;
        let response = send.send_request(req).await?;
        let status = response.status();
        let text = response.into_body().collect().await?.to_bytes();
        if !status.is_success() && status != StatusCode::CONFLICT {
            bail!(
                "{method} {path}: {status}: {}",
                String::from_utf8_lossy(&text[..text.len().min(300)])
            );
        }
        Ok(status)
    }

    async fn create(&self, collection: &str, object: &Value) -> anyhow::Result<()> {
        self.call(
            "POST",
            collection,
            "application/json",
            serde_json::to_vec(object)?,
        )
        .await
        .map(drop)
    }

    async fn create_namespace(&self) -> anyhow::Result<()> {
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}});
        self.create("/api/v1/namespaces", &ns).await
    }

    /// Many creates at once on the one connection.
    async fn create_all(&self, collection: &str, objects: Vec<Value>) -> anyhow::Result<()> {
        let mut tasks = tokio::task::JoinSet::new();
        for chunk in objects.chunks(objects.len().div_ceil(32).max(1)) {
            let (chunk, api) = (chunk.to_vec(), self.clone());
            let collection = collection.to_owned();
            tasks.spawn(async move {
                for object in &chunk {
                    api.create(&collection, object).await?;
                }
                anyhow::Ok(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        Ok(())
    }
}

fn now_ns() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    )
    .unwrap_or(u64::MAX)
}

/// What the watches of one way saw.
#[derive(Clone)]
struct Seen {
    /// Watches whose first event (the object's ADDED) arrived: the watch is open.
    open: Arc<AtomicUsize>,
    /// Send-to-receive latency of each update event, ns.
    latency: Arc<Mutex<Histogram<u64>>>,
    /// The first failure of any watch of this way.
    error: Arc<Mutex<Option<String>>>,
}

impl Seen {
    fn new() -> Self {
        Self {
            open: Arc::new(AtomicUsize::new(0)),
            latency: Arc::new(Mutex::new(histogram())),
            error: Arc::new(Mutex::new(None)),
        }
    }

    fn fail(&self, e: &anyhow::Error) {
        let mut first = self.error.lock().expect("not poisoned");
        first.get_or_insert_with(|| format!("{e:#}"));
    }

    fn events(&self) -> u64 {
        self.latency.lock().expect("not poisoned").len()
    }

    fn us(&self, percentile: f64) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let ns = self
            .latency
            .lock()
            .expect("not poisoned")
            .value_at_quantile(percentile / 100.0) as f64;
        ns / 1000.0
    }
}

/// Reads one watch until it ends, timing every event that carries a send time.
async fn watch(mut conn: Conn, target: Target, get: Get, seen: Seen) -> anyhow::Result<()> {
    let mut body = conn.send(&target, &get).await?;
    let mut line = Vec::new();
    let mut first = true;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        let received = now_ns();
        for part in data.split_inclusive(|b| *b == b'\n') {
            line.extend_from_slice(part);
            if line.last() != Some(&b'\n') {
                continue;
            }
            let event: Value = serde_json::from_slice(&line).context("a watch event")?;
            line.clear();
            if first {
                first = false;
                seen.open.fetch_add(1, Ordering::Relaxed);
            }
            let sent = event["object"]["data"]["sent"]
                .as_str()
                .and_then(|s| s.parse::<u64>().ok());
            if let (Some("MODIFIED"), Some(sent)) = (event["type"].as_str(), sent) {
                let _ = seen
                    .latency
                    .lock()
                    .expect("not poisoned")
                    .record(received.saturating_sub(sent).max(1_000));
            }
        }
    }
    bail!("the watch ended")
}

async fn watches(setup: &Setup, api: &Api, findings: &mut Findings) -> anyhow::Result<Section> {
    crate::step(&format!("scale: creating {WATCHES} ConfigMaps"));
    let objects = (0..WATCHES)
        .map(|i| {
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": format!("w-{i}"), "namespace": NAMESPACE},
                   "data": {"sent": "0"}})
        })
        .collect();
    api.create_all(
        &format!("/api/v1/namespaces/{NAMESPACE}/configmaps"),
        objects,
    )
    .await?;

    let ways = setup.ways();
    // The proxies' memory before any watch: what the watches add is the difference.
    let rss_before: Vec<_> = ways.iter().map(|t| setup.pid(t).map(rss_kib)).collect();
    let mut seen = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for &target in &ways {
        crate::step(&format!("scale: {WATCHES} watches via {}", target.via));
        let way = Seen::new();
        for first in (0..WATCHES).step_by(PER_CONN) {
            let conn = connect(target, Proto::H2).await?;
            for i in first..(first + PER_CONN).min(WATCHES) {
                let get = Get::new(
                    format!(
                        "/api/v1/namespaces/{NAMESPACE}/configmaps?watch=true&fieldSelector=metadata.name%3Dw-{i}"
                    ),
                    setup.bot_token.clone(),
                );
                let (conn, target, way) = (
                    conn.share().context("an HTTP/2 connection")?,
                    target.clone(),
                    way.clone(),
                );
                tasks.spawn(async move {
                    if let Err(e) = watch(conn, target, get, way.clone()).await {
                        way.fail(&e);
                    }
                });
            }
        }
        seen.push(way);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen
        .iter()
        .any(|s| s.open.load(Ordering::Relaxed) < WATCHES)
    {
        if let Some(e) = seen.iter().find_map(|s| s.error.lock().expect("").clone()) {
            bail!("a watch failed: {e}");
        }
        if Instant::now() > deadline {
            let open: Vec<_> = ways
                .iter()
                .zip(&seen)
                .map(|(t, s)| format!("{} {}", t.via, s.open.load(Ordering::Relaxed)))
                .collect();
            bail!(
                "the watches did not all open within 120 s (open: {})",
                open.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let quiet = setup.duration().max(Duration::from_secs(5));
    crate::step(&format!(
        "scale: {} s idle with {WATCHES} watches per way",
        quiet.as_secs()
    ));
    let idle: Vec<_> = ways
        .iter()
        .map(|t| setup.pid(t).map(Meter::start))
        .collect();
    tokio::time::sleep(quiet).await;
    let idle: Vec<_> = idle.into_iter().map(|m| m.map(Meter::stop)).collect();
    let rss: Vec<_> = ways.iter().map(|t| setup.pid(t).map(rss_kib)).collect();

    crate::step(&format!(
        "scale: {EVENTS_PER_S} updates/s for {} s",
        quiet.as_secs()
    ));
    let busy: Vec<_> = ways
        .iter()
        .map(|t| setup.pid(t).map(Meter::start))
        .collect();
    let total = EVENTS_PER_S * quiet.as_secs();
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / EVENTS_PER_S));
    for n in 0..total {
        tick.tick().await;
        let patch = json!({"data": {"sent": now_ns().to_string()}});
        let i = usize::try_from(n).unwrap_or(0) % WATCHES;
        api.call(
            "PATCH",
            &format!("/api/v1/namespaces/{NAMESPACE}/configmaps/w-{i}"),
            "application/merge-patch+json",
            serde_json::to_vec(&patch)?,
        )
        .await?;
    }
    // The last events' way through the proxies.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let busy: Vec<_> = busy.into_iter().map(|m| m.map(Meter::stop)).collect();
    tasks.abort_all();

    let mut section = Section::new(
        "watches",
        "Watches",
        &format!(
            "{WATCHES} watches per way, each on its own ConfigMap, {PER_CONN} per HTTP/2 connection, all open at once through direct, nginx and kgate. RSS and idle CPU: the proxy with every watch open and nothing happening (before: its RSS before the watches opened). Then {EVENTS_PER_S} updates/s round-robin across the ConfigMaps: event latency from the update's send to the event's arrival; added is the way's percentile minus direct's, for the same events."
        ),
        &[
            "via",
            "watches",
            "RSS before MiB",
            "RSS MiB",
            "idle CPU %",
            "CPU % at 100 events/s",
            "events",
            "p50 ms",
            "p99 ms",
            "added p50 µs",
            "added p99 µs",
        ],
    );
    let (direct_p50, direct_p99) = (seen[0].us(50.0), seen[0].us(99.0));
    for (k, target) in ways.iter().enumerate() {
        let way = &seen[k];
        #[allow(clippy::cast_precision_loss)]
        let rss_mib = rss[k].map(|kib| kib as f64 / 1024.0);
        #[allow(clippy::cast_precision_loss)]
        let before_mib = rss_before[k].map(|kib| kib as f64 / 1024.0);
        let idle_cpu = idle[k].map(|u| 100.0 * u.cpu_seconds / u.seconds);
        let busy_cpu = busy[k].map(|u| 100.0 * u.cpu_seconds / u.seconds);
        let (p50, p99) = (way.us(50.0), way.us(99.0));
        let added = (k > 0).then_some((p50 - direct_p50, p99 - direct_p99));
        if target.via == "kgate" {
            findings.watches = Some((rss_mib.unwrap_or(0.0), idle_cpu.unwrap_or(0.0)));
        }
        let opt =
            |v: Option<f64>, digits: usize| v.map_or("-".to_owned(), |v| format!("{v:.digits$}"));
        section.row(
            vec![
                target.via.into(),
                WATCHES.to_string(),
                opt(before_mib, 1),
                opt(rss_mib, 1),
                opt(idle_cpu, 2),
                opt(busy_cpu, 1),
                format!("{}/{total}", way.events()),
                format!("{:.2}", p50 / 1000.0),
                format!("{:.2}", p99 / 1000.0),
                opt(added.map(|a| a.0), 0),
                opt(added.map(|a| a.1), 0),
            ],
            json!({
                "via": target.via, "watches": WATCHES, "per_connection": PER_CONN,
                "rss_before_mib": before_mib, "rss_mib": rss_mib, "idle_cpu_percent": idle_cpu, "busy_cpu_percent": busy_cpu,
                "events": way.events(), "events_sent": total,
                "p50_us": p50, "p99_us": p99,
                "added_p50_us": added.map(|a| a.0), "added_p99_us": added.map(|a| a.1),
                "first_error": way.error.lock().expect("not poisoned").clone(),
            }),
        );
    }
    Ok(section)
}

/// Reads a whole answer; its length.
async fn read_all(target: &Target, get: &Get) -> anyhow::Result<u64> {
    connect(target, Proto::H2).await?.get(target, get).await
}

async fn lists(setup: &Setup, api: &Api, findings: &mut Findings) -> anyhow::Result<Section> {
    const EACH: usize = 102_400;
    let count = LIST_MB * 1_000_000 / EACH;
    crate::step(&format!("scale: creating {count} Secrets of 100 KiB"));
    let value = base64_blob(EACH);
    let objects = (0..count)
        .map(|i| {
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": format!("l-{i}"), "namespace": NAMESPACE},
                   "data": {"blob": value}})
        })
        .collect();
    api.create_all(&format!("/api/v1/namespaces/{NAMESPACE}/secrets"), objects)
        .await?;
    let get = Get::new(
        format!("/api/v1/namespaces/{NAMESPACE}/secrets"),
        setup.bot_token.clone(),
    );
    let mut section = Section::new(
        "lists",
        "Concurrent LISTs",
        &format!(
            "{LISTS} LISTs at once, each of {count} Secrets of 100 KiB (about {LIST_MB} MB), each on its own HTTP/2 connection. Peak extra RSS: the proxy's peak during the LISTs over its memory before; the sum of the answers is {} MB. kgate masks the Secrets' data, so its clients get far fewer bytes than it reads: compare its seconds with the other ways' only as the time to take in every answer.",
            LISTS * LIST_MB
        ),
        &[
            "via",
            "lists",
            "MB each (to client)",
            "seconds",
            "peak extra RSS MiB",
        ],
    );
    for target in setup.ways() {
        crate::step(&format!("scale: {LISTS} LISTs via {}", target.via));
        let meter = setup.pid(target).map(Meter::start);
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..LISTS {
            let (target, get) = (target.clone(), get.clone());
            tasks.spawn(async move { read_all(&target, &get).await });
        }
        let mut bytes = 0;
        while let Some(done) = tasks.join_next().await {
            bytes = done??;
        }
        let seconds = started.elapsed().as_secs_f64();
        let usage = meter.map(Meter::stop);
        #[allow(clippy::cast_precision_loss)]
        let extra_mib =
            usage.map(|u| u.peak_rss_kib.saturating_sub(u.start_rss_kib) as f64 / 1024.0);
        if target.via == "kgate" {
            findings.lists_extra_mib = extra_mib;
        }
        #[allow(clippy::cast_precision_loss)]
        let mb = bytes as f64 / 1e6;
        section.row(
            vec![
                target.via.into(),
                LISTS.to_string(),
                format!("{mb:.2}"),
                format!("{seconds:.2}"),
                extra_mib.map_or("-".to_owned(), |v| format!("{v:.1}")),
            ],
            json!({"via": target.via, "lists": LISTS, "client_bytes_each": bytes,
                   "seconds": seconds, "peak_extra_rss_mib": extra_mib}),
        );
    }
    Ok(section)
}

/// `len` bytes of base64 text (a Secret's value; what it decodes to does not matter).
fn base64_blob(len: usize) -> String {
    "QUJD".repeat(len / 4)
}
