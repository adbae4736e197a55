//! A connection whose writes must make progress: a client that stops reading (pipelining requests it
//! never reads the answers to, or an event stream it never drains) fills its socket's buffers, and
//! hyper would wait to write for ever, holding one of `--max-connections`. [`Watched`] notes when a
//! write started waiting, and [`Stall::exceeded`] ends the connection's task once one has waited
//! `--write-timeout` without progress: the connection is dropped, and so closed.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// When the connection's pending write started waiting, in milliseconds since [`epoch`] plus one;
/// zero while no write waits.
#[derive(Debug, Default)]
pub(crate) struct Stall(AtomicU64);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
}

impl Stall {
    fn waiting(&self) {
        // The first wait counts: later ones of the same stall keep its start.
        let _ = self.0.compare_exchange(0, now_ms(), Ordering::Relaxed, Ordering::Relaxed);
    }

    fn progressed(&self) {
        self.0.store(0, Ordering::Relaxed);
    }

    /// Completes once a write has waited `timeout` without progress; checks a few times per timeout.
    pub(crate) async fn exceeded(&self, timeout: Duration) {
        let every = (timeout / 4).max(Duration::from_millis(10));
        let limit = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        loop {
            tokio::time::sleep(every).await;
            let since = self.0.load(Ordering::Relaxed);
            if since != 0 && now_ms().saturating_sub(since) >= limit {
                return;
            }
        }
    }
}

/// `io`, its write waits noted in a [`Stall`].
pub(crate) struct Watched<T> {
    io: T,
    stall: Arc<Stall>,
}

impl<T> Watched<T> {
    pub(crate) fn new(io: T, stall: Arc<Stall>) -> Watched<T> {
        Watched { io, stall }
    }

    fn note<R>(&self, result: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        match &result {
            Poll::Ready(_) => self.stall.progressed(),
            Poll::Pending => self.stall.waiting(),
        }
        result
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write(cx, buf);
        this.note(written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.note(written)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.io).poll_flush(cx);
        this.note(flushed)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let closed = Pin::new(&mut this.io).poll_shutdown(cx);
        this.note(closed)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Writes `total` bytes to `io` unless the stall watch ends it first: whether it finished.
    async fn write_watched(io: tokio::io::DuplexStream, total: usize, timeout: Duration) -> bool {
        let stall = Arc::new(Stall::default());
        let mut io = Watched::new(io, stall.clone());
        let bytes = vec![0; total];
        tokio::select! {
            written = io.write_all(&bytes) => written.is_ok(),
            () = stall.exceeded(timeout) => false,
        }
    }

    #[tokio::test]
    async fn a_reader_that_never_reads_is_cut_off_and_one_that_reads_is_not() {
        // A pipe whose other end reads nothing: writes stop once its buffer is full.
        let (writer, _reader) = tokio::io::duplex(1024);
        let started = Instant::now();
        assert!(!write_watched(writer, 64 * 1024, Duration::from_millis(200)).await);
        assert!(started.elapsed() >= Duration::from_millis(200), "{:?}", started.elapsed());

        // Slow but steady progress is never cut off.
        let (writer, mut slow) = tokio::io::duplex(64);
        let drain = tokio::spawn(async move {
            let (mut buf, mut total) = ([0; 64], 0);
            while total < 4096 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                total += slow.read(&mut buf).await.unwrap();
            }
        });
        assert!(write_watched(writer, 4096, Duration::from_millis(100)).await);
        drain.await.unwrap();
    }
}
