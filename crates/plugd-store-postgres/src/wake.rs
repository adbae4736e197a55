//! Wake-ups across nodes: LISTEN/NOTIFY on one channel, sent after commit and coalesced (at most one
//! NOTIFY in flight per node, carrying every kind asked for meanwhile), never inside a write
//! transaction. Receivers also poll (see `Store::max_idle`), so a lost notification costs at most that.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use futures_util::StreamExt;
use plugd_core::store::Wake;
use tokio::sync::Notify;
use tokio_postgres::AsyncMessage;

use crate::config::PgUrl;
use crate::tls;

/// The channel every node listens on.
const CHANNEL: &str = "plugd_wake";

const INVOCATIONS: u8 = 1;
const OUTBOX: u8 = 2;

fn bit(what: Wake) -> u8 {
    match what {
        Wake::Invocations => INVOCATIONS,
        Wake::Outbox => OUTBOX,
    }
}

/// One node's side of the wake-ups.
pub(crate) struct Wakes {
    /// This node, to ignore its own notifications.
    node: String,
    /// Kinds to notify other nodes of.
    outgoing: AtomicU8,
    send: Notify,
    invocations: Notify,
    outbox: Notify,
}

impl Wakes {
    pub(crate) fn new() -> Arc<Wakes> {
        Arc::new(Wakes {
            node: format!("{:016x}", rand_u64()),
            outgoing: AtomicU8::new(0),
            send: Notify::new(),
            invocations: Notify::new(),
            outbox: Notify::new(),
        })
    }

    /// Asks for other nodes to be told (after the write that made `what` due has committed).
    pub(crate) fn tell_others(&self, what: Wake) {
        self.outgoing.fetch_or(bit(what), Ordering::AcqRel);
        self.send.notify_one();
    }

    /// Completes when another node made `what` due.
    pub(crate) async fn woken(&self, what: Wake) {
        match what {
            Wake::Invocations => self.invocations.notified().await,
            Wake::Outbox => self.outbox.notified().await,
        }
    }

    fn wake_here(&self, bits: u8) {
        if bits & INVOCATIONS != 0 {
            self.invocations.notify_one();
        }
        if bits & OUTBOX != 0 {
            self.outbox.notify_one();
        }
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher
        .write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// Sends coalesced notifications until `wakes` is the last reference.
pub(crate) async fn send(wakes: Arc<Wakes>, pool: Pool) {
    while Arc::strong_count(&wakes) > 2 {
        tokio::select! {
            () = wakes.send.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => continue,
        }
        let bits = wakes.outgoing.swap(0, Ordering::AcqRel);
        if bits == 0 {
            continue;
        }
        let payload = format!("{}:{bits}", wakes.node);
        let sent = match pool.get().await {
            Ok(conn) => conn
                .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = sent {
            // The others find the work within their polling interval.
            tracing::debug!("cannot notify the other nodes: {e}");
        }
    }
}

/// Listens for the other nodes' notifications, reconnecting by itself, until `wakes` is the last
/// reference.
pub(crate) async fn listen(wakes: Arc<Wakes>, url: PgUrl) {
    let mut failures = 0u32;
    while Arc::strong_count(&wakes) > 2 {
        let result = match tls::connector(&url.ssl) {
            Ok(Some(tls)) => listen_once(&wakes, &url, tls).await,
            Ok(None) => listen_once(&wakes, &url, tokio_postgres::NoTls).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            failures += 1;
            if failures == 1 {
                tracing::warn!("lost the notification connection to {}: {e}; reconnecting", url.location());
            }
        } else {
            failures = 0;
        }
        // Whatever was notified meanwhile is found by looking now.
        wakes.wake_here(INVOCATIONS | OUTBOX);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn listen_once<T>(wakes: &Arc<Wakes>, url: &PgUrl, tls: T) -> Result<(), String>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    let (client, mut connection) = url.config.connect(tls).await.map_err(|e| e.to_string())?;
    let messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let listening = async {
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await.map_err(|e| e.to_string())?;
        std::future::pending::<Result<(), String>>().await
    };
    let receiving = async {
        futures_util::pin_mut!(messages);
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    let (node, bits) = n.payload().split_once(':').unwrap_or(("", ""));
                    if node != wakes.node {
                        wakes.wake_here(bits.parse().unwrap_or(INVOCATIONS | OUTBOX));
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
            if Arc::strong_count(wakes) <= 2 {
                return Ok(());
            }
        }
        Err("the connection closed".to_owned())
    };
    let stop = async {
        while Arc::strong_count(wakes) > 2 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Ok(())
    };
    tokio::select! {
        r = listening => r,
        r = receiving => r,
        r = stop => r,
    }
}
