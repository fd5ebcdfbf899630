//! The **record** stage: one structured log event per request and per upgraded stream,
//! with who (kernel origin), what (request attributes), the outcome and the latency.
//!
//! Not yet here: durable storage, audit.k8s.io/v1 events and frame-level stream
//! capture (the session recording issue). [`StreamTap`] is where upgraded streams pass
//! through, so that capture has one place to go.

use std::{
    io,
    time::{Duration, Instant},
};

use http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::info;

use kgate_common::Origin;

use super::accept::Connection;
use crate::{
    identity::Identity,
    metrics::Metrics,
    policy::{Decision, types::Action},
    request_info::RequestInfo,
    status::Status,
};

/// How a request ended, as far as the record is concerned.
pub struct Outcome<'a> {
    pub status: StatusCode,
    pub latency: Duration,
    /// The message of a refusal kgate made itself.
    pub refused: Option<&'a str>,
}

impl<'a> Outcome<'a> {
    pub fn refused<B>(response: &http::Response<B>, status: &'a Status, started: Instant) -> Self {
        Self {
            status: response.status(),
            latency: started.elapsed(),
            refused: Some(&status.message),
        }
    }
}

/// Logs a finished request (for a watch or stream: its response head).
pub fn request(
    metrics: &Metrics,
    conn: &Connection,
    identity: Option<&Identity>,
    info: &RequestInfo,
    decision: Option<&Decision>,
    outcome: &Outcome<'_>,
) {
    info!(
        user = identity.map(|i| i.user.username.as_str()),
        workload = identity.map(|i| i.workload.describe()),
        impersonated = identity.is_some_and(|i| i.impersonate),
        pid = conn.origin.map(|o| o.pid()),
        exe = conn.exe.as_deref(),
        comm = conn.origin.as_ref().map(Origin::comm),
        cgroup = conn.cgroup.as_deref().unwrap_or("?"),
        verb = %info.verb,
        api_group = %info.api_group,
        resource = %info.resource,
        subresource = %info.subresource,
        namespace = %info.namespace,
        name = %info.name,
        path = %info.path,
        decision = decision.map(|d| format!("{:?}", d.action)),
        rule = decision.map(|d| d.source.as_str()),
        would = decision.and_then(|d| d.shadowed).map(|a| format!("{a:?}")),
        status = outcome.status.as_u16(),
        latency_us = u64::try_from(outcome.latency.as_micros()).unwrap_or(u64::MAX),
        refused = outcome.refused,
        "request"
    );
    let label = match decision {
        None => "refused",
        Some(d) => match (d.action, d.shadowed) {
            (_, Some(Action::Deny)) => "shadow-deny",
            (_, Some(_)) => "shadow-approve",
            (Action::Allow, None) => "allow",
            (Action::Deny, None) => "deny",
            (Action::Approve, None) => "approve",
        },
    };
    metrics.request(label, outcome.status, outcome.latency.as_secs_f64());
}

/// The relay of one upgraded stream (exec, attach, port-forward).
#[derive(Debug)]
pub struct StreamTap {
    what: String,
}

impl StreamTap {
    pub fn new(what: String) -> Self {
        Self { what }
    }

    /// Copies both ways until each side has closed its half; returns the byte counts
    /// (client → upstream, upstream → client).
    pub async fn relay<C, U>(self, client: C, upstream: U) -> io::Result<(u64, u64)>
    where
        C: AsyncRead + AsyncWrite + Unpin,
        U: AsyncRead + AsyncWrite + Unpin,
    {
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
        let (up, down) = tokio::join!(
            copy_half(&mut client_read, &mut upstream_write),
            copy_half(&mut upstream_read, &mut client_write),
        );
        let (up, down) = (up?, down?);
        info!(stream = %self.what, bytes_in = up, bytes_out = down, "stream closed");
        Ok((up, down))
    }
}

/// Copies until EOF, then half-closes the writer so the far side sees the EOF too
/// (kubectl exec's stdin EOF must reach the process).
async fn copy_half<R, W>(reader: &mut R, writer: &mut W) -> io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            writer.shutdown().await?;
            return Ok(total);
        }
        writer.write_all(&buf[..n]).await?;
        writer.flush().await?;
        total += n as u64;
    }
}
