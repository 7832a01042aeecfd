//! Wake-ups: `NOTIFY` after appends, and a listener on a dedicated connection that keeps a
//! watch channel at the readable head position.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use deadpool_postgres::Pool;
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_postgres::AsyncMessage;

use crate::tls::TlsConnector;

/// Longest wait between two reconnection attempts of the listener.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What the listener needs to run on its own.
#[derive(Clone, Debug)]
pub(crate) struct ListenerConfig {
    pub(crate) pg_config: tokio_postgres::Config,
    /// TLS as the store's connections use it.
    pub(crate) tls: TlsConnector,
    pub(crate) channel: String,
    pub(crate) head_sql: String,
    pub(crate) poll_interval: Duration,
    /// The shortest time between two reads of the head after wake-ups.
    pub(crate) min_interval: Duration,
}

#[derive(Debug, Default)]
struct Tasks {
    notifier: Option<JoinHandle<()>>,
    listener: Option<JoinHandle<()>>,
}

/// The store's notification state; dropping it stops its tasks.
#[derive(Debug)]
pub(crate) struct Notifier {
    /// The readable head, kept by the listener.
    head: Arc<watch::Sender<u64>>,
    /// The last position appended by this process, sent as `NOTIFY` by the notifier task.
    appended: watch::Sender<u64>,
    tasks: Mutex<Tasks>,
}

impl Notifier {
    pub(crate) fn new() -> Self {
        Self {
            head: Arc::new(watch::channel(0).0),
            appended: watch::channel(0).0,
            tasks: Mutex::default(),
        }
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, Tasks> {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a committed append and makes sure a `NOTIFY` follows. The `NOTIFY` is sent
    /// after the commit, outside the append's transaction, and coalesced: many appends
    /// in a burst cost one notification.
    pub(crate) fn appended(
        &self,
        position: u64,
        pool: &Pool,
        channel: &str,
        notify_sql: &str,
        interval: Duration,
    ) {
        self.appended.send_if_modified(|last| {
            let newer = position > *last;
            if newer {
                *last = position;
            }
            newer
        });
        let mut tasks = self.tasks();
        if tasks.notifier.is_some() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut rx = self.appended.subscribe();
        rx.mark_changed();
        let pool = pool.clone();
        let channel = channel.to_owned();
        let sql = notify_sql.to_owned();
        tasks.notifier = Some(runtime.spawn(async move {
            while rx.changed().await.is_ok() {
                let position = rx.borrow_and_update().to_string();
                match pool.get().await {
                    Ok(client) => {
                        if let Err(error) = client.execute(&sql, &[&channel, &position]).await {
                            tracing::debug!(%error, "could not send an append notification");
                        }
                    }
                    Err(error) => {
                        tracing::debug!(%error, "could not send an append notification");
                    }
                }
                tokio::time::sleep(interval).await;
            }
        }));
    }

    /// A receiver of the readable head; starts the listener on first use.
    pub(crate) fn watch(&self, config: &ListenerConfig) -> watch::Receiver<u64> {
        let mut tasks = self.tasks();
        if tasks.listener.is_none() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let local = self.appended.subscribe();
                tasks.listener =
                    Some(runtime.spawn(listen(config.clone(), self.head.clone(), local)));
            }
        }
        self.head.subscribe()
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        let tasks = self.tasks.get_mut().unwrap_or_else(PoisonError::into_inner);
        for task in [tasks.notifier.take(), tasks.listener.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
    }
}

fn publish(head: &watch::Sender<u64>, position: u64) {
    head.send_if_modified(|current| {
        let newer = position > *current;
        if newer {
            *current = position;
        }
        newer
    });
}

/// Listens forever, reconnecting with backoff. `local` wakes it on this process's own
/// appends, without waiting for their notification.
async fn listen(
    config: ListenerConfig,
    head: Arc<watch::Sender<u64>>,
    mut local: watch::Receiver<u64>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        match session(&config, &head, &mut local).await {
            Ok(false) => return,
            Ok(true) => backoff = Duration::from_millis(50),
            Err(error) => tracing::debug!(%error, "head listener disconnected"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One listening connection: reads the head on start, after each burst of notifications or
/// local appends, and every poll interval. Returns whether to reconnect.
async fn session(
    config: &ListenerConfig,
    head: &watch::Sender<u64>,
    local: &mut watch::Receiver<u64>,
) -> Result<bool, tokio_postgres::Error> {
    let (client, mut connection) = config.pg_config.connect(config.tls.clone()).await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    if tx.send(()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(%error, "head listener connection failed");
                    break;
                }
            }
        }
    });
    let _stop_driver = AbortOnDrop(driver);
    client
        .batch_execute(&format!("LISTEN \"{}\"", config.channel))
        .await?;
    let head_stmt = client.prepare(&config.head_sql).await?;
    loop {
        let position: i64 = client.query_one(&head_stmt, &[]).await?.try_get("safe")?;
        publish(head, u64::try_from(position).unwrap_or(0));
        tokio::select! {
            woken = rx.recv() => {
                if woken.is_none() {
                    // The connection ended: reconnect.
                    return Ok(true);
                }
            }
            changed = local.changed() => {
                if changed.is_err() {
                    // The store is gone.
                    return Ok(false);
                }
            }
            () = tokio::time::sleep(config.poll_interval) => continue,
        }
        // Let a burst of appends settle into one read.
        tokio::time::sleep(config.min_interval).await;
        while rx.try_recv().is_ok() {}
        local.borrow_and_update();
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
