//! Load client for `cargo xtask bench`: GETs one URL over warm HTTPS connections and
//! prints one JSON line: requests/s and latency percentiles.
//!
//! `kgate-bench --url URL --ca FILE --token TOKEN (--h2|--h1) --requests N --concurrency C`

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use kgate_tests::harness::https_client;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let url = value("--url").ok_or_else(|| anyhow::anyhow!("--url is required"))?;
    let ca =
        std::fs::read_to_string(value("--ca").ok_or_else(|| anyhow::anyhow!("--ca is required"))?)?;
    let token = value("--token").unwrap_or_default();
    let h2 = args.iter().any(|a| a == "--h2");
    let requests: usize = value("--requests").map_or(Ok(2000), |v| v.parse())?;
    let concurrency: usize = value("--concurrency").map_or(Ok(1), |v| v.parse())?;

    let client = Arc::new(https_client(&ca, h2));
    let get = {
        let (client, url, token) = (client.clone(), url.clone(), token.clone());
        move || {
            let (client, url, token) = (client.clone(), url.clone(), token.clone());
            async move {
                let req = Request::get(&url)
                    .header("authorization", format!("Bearer {token}"))
                    .body(Full::new(Bytes::new()))?;
                let started = Instant::now();
                let response = client.request(req).await?;
                anyhow::ensure!(
                    response.status().is_success(),
                    "status {}",
                    response.status()
                );
                let body = response.into_body().collect().await?.to_bytes();
                anyhow::ensure!(!body.is_empty(), "empty body");
                Ok::<_, anyhow::Error>(started.elapsed())
            }
        }
    };
    // Warm the connections (TLS handshakes, pools) before measuring.
    for _ in 0..concurrency.max(50) {
        get().await?;
    }
    let per_task = requests / concurrency;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let get = get.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_task);
            for _ in 0..per_task {
                latencies.push(get().await?);
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies: Vec<Duration> = Vec::with_capacity(requests);
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let i = ((latencies.len() as f64 * p) as usize).min(latencies.len() - 1);
        latencies[i].as_micros()
    };
    #[allow(clippy::cast_precision_loss)]
    let rps = latencies.len() as f64 / elapsed.as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"requests": latencies.len(), "rps": rps.round(), "p50_us": pct(0.50), "p99_us": pct(0.99)})
    );
    Ok(())
}
