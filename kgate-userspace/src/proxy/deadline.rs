//! Deadlines that cut off clients that hold a connection without moving it forward
//! (slowloris, slow-read), without a deadline on streams that are merely quiet.
//!
//! - The TLS handshake, and the time from it to the first complete request head (the
//!   HTTP/2 preface and its first HEADERS, or an HTTP/1.1 head), are bounded by
//!   [`HANDSHAKE_TIMEOUT`]. Later HTTP/1.1 heads are bounded by hyper's
//!   `header_read_timeout` (the same value); the API server's own bound is its
//!   `ReadHeaderTimeout` of 32 s.
//! - A write that makes no progress for [`STALLED_WRITE_TIMEOUT`] fails the connection
//!   ([`StallGuard`]): the client stopped reading, and the response would otherwise
//!   hold a task, its upstream stream and buffers for ever. The clock runs only while a
//!   write is pending, so a watch that is silent for hours is never cut, and a slow
//!   reader that takes any bytes at all keeps its connection.
//!
//! Not here: dead but silent peers of idle connections (HTTP/2 keep-alive pings and
//! TCP keep-alives find those), and upstream deadlines (the forward stage has none by
//! design: watches and exec streams last as long as both ends want).

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep},
};

/// Bound on the TLS handshake and on the wait for the first request head.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on a write that makes no progress at all.
pub(crate) const STALLED_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Wraps a connection's transport: fails a write (and so the connection) once the
/// peer has taken no bytes for `limit` while a write waited.
pub(crate) struct StallGuard<T> {
    inner: T,
    limit: Duration,
    /// Set while a write is pending; cleared by any progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<T> StallGuard<T> {
    pub(crate) fn new(inner: T, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            stalled: None,
        }
    }

    /// After the inner write returned `result`: clears the clock on progress, and on
    /// `Pending` starts it (or reports its expiry).
    fn account<R>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if result.is_ready() {
            self.stalled = None;
            return result;
        }
        let limit = self.limit;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(Instant::now() + limit)));
        ready!(sleep.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("kgate: the client read nothing for {} s", limit.as_secs()),
        )))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for StallGuard<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for StallGuard<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.account(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.account(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.account(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.account(cx, result)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_reads_nothing_is_cut_off() {
        let (near, _far) = tokio::io::duplex(1024);
        let mut guarded = StallGuard::new(near, Duration::from_secs(30));
        let started = Instant::now();
        let error = loop {
            if let Err(error) = guarded.write_all(&[0; 4096]).await {
                break error;
            }
        };
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_and_a_quiet_stream_are_not() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut guarded = StallGuard::new(near, Duration::from_secs(30));
        // Quiet: nothing to write for an hour.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        // Slow: the peer takes 512 bytes every 20 s.
        let reader = tokio::spawn(async move {
            let mut buf = [0; 512];
            let mut total = 0;
            while total < 8192 {
                tokio::time::sleep(Duration::from_secs(20)).await;
                total += far.read(&mut buf).await.unwrap();
            }
            far
        });
        guarded
            .write_all(&[1; 8192])
            .await
            .expect("a slow reader keeps its connection");
        drop(reader.await.unwrap());
    }
}
