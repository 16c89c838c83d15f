//! `Store::watch` on the API server: one watch of a kind's collection, followed from a known
//! resourceVersion and re-opened where it left off, by a task that feeds a channel.
//!
//! The watch asks for metadata only (`PartialObjectMetadata`): a consumer learns which object
//! changed and its new version, which is all a [`WatchEvent`] carries, and is spared decoding
//! the object itself. A pool's `allocatedIPs` document grows with its IPs; a full watch made
//! every agent decode every write to every pool.
//!
//! Why not kube-runtime's `watcher`: it starts with a fresh list, so the writes between
//! `watch()` and that list would go unreported; the store instead starts the watch at the
//! newest resourceVersion it has seen (`KubeStore` records it from every answer), so every
//! write the caller can know nothing of yet is reported. The API server's resourceVersions are
//! etcd revisions, one counter for every resource, so a version seen on a pool is a valid start
//! for a watch of subnets too.
//!
//! When the server no longer has the history (410 Gone: the start is older than its watch
//! cache, or the watch broke for longer than that), the task takes the current version with a
//! one-item list, *then* sends [`WatchEvent::Lost`], then watches from there: a consumer that
//! re-lists on `Lost` lists at that version or later, so nothing falls between its list and
//! the watch. A watch that ends (its server-side timeout), breaks, or stays silent past
//! [`SILENCE`] is re-opened from the last version received, after a backoff while it keeps
//! failing. The task ends when the stream is dropped.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use ipam_core::Kind;
use ipam_core::store::{WatchEvent, WatchStream};
use kube::api::{Api, DynamicObject, ListParams, WatchParams};
use tokio::sync::mpsc;

use crate::wire;

/// How long one watch request lasts on the server before it ends and is re-opened.
const WATCH_SECONDS: u32 = 60;

/// A watch that sends nothing, not even a bookmark, for this long is taken for a dead
/// connection and re-opened (the server sends a bookmark about once a minute).
pub(crate) const SILENCE: Duration = Duration::from_secs(WATCH_SECONDS as u64 + 15);

/// Events the consumer has not taken yet; past this, the task waits (and the server, if it
/// waits too long, ends the watch: the task then resumes or reports `Lost`).
const BUFFER: usize = 1024;

/// The stream of `api`'s changes from `from` on. The task starts now if a tokio runtime is
/// current, else on the stream's first poll.
pub(crate) fn stream(
    api: Api<DynamicObject>,
    kind: Kind,
    from: Option<String>,
    seen: Arc<AtomicU64>,
    deadline: Duration,
) -> WatchStream {
    let (tx, rx) = mpsc::channel(BUFFER);
    let task: BoxFuture<'static, ()> = Box::pin(follow(api, kind, from, tx, seen, deadline));
    let task = match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(task);
            None
        }
        Err(_) => Some(task),
    };
    Box::pin(futures::stream::unfold(
        (task, rx),
        |(task, mut rx)| async move {
            if let Some(task) = task {
                tokio::spawn(task);
            }
            let event = rx.recv().await?;
            Some((event, (None, rx)))
        },
    ))
}

/// Why one watch request ended.
enum End {
    /// Re-open it from the last version.
    Resume,
    /// The history is gone: start again from the current version, after `Lost`.
    Gone,
    /// The consumer is gone.
    Closed,
}

async fn follow(
    api: Api<DynamicObject>,
    kind: Kind,
    mut from: Option<String>,
    tx: mpsc::Sender<WatchEvent>,
    seen: Arc<AtomicU64>,
    deadline: Duration,
) {
    let mut lost = false;
    let mut failures = 0u32;
    loop {
        let version = match from.take() {
            Some(v) => v,
            None => {
                let one = ListParams::default().limit(1);
                match tokio::time::timeout(deadline, api.list_metadata(&one)).await {
                    Ok(Ok(list)) => list.metadata.resource_version.unwrap_or_default(),
                    _ => {
                        if pause(&tx, &mut failures).await {
                            return;
                        }
                        continue;
                    }
                }
            }
        };
        if lost {
            if tx.send(WatchEvent::Lost).await.is_err() {
                return;
            }
            lost = false;
        }
        let mut at = version.clone();
        match watch_once(&api, kind, &mut at, &tx, &seen).await {
            End::Closed => return,
            End::Gone => {
                lost = true;
                tracing::info!(%kind, "watch history gone: reporting Lost");
            }
            End::Resume => from = Some(at.clone()),
        }
        if at != version {
            failures = 0;
        } else if pause(&tx, &mut failures).await {
            return;
        }
    }
}

/// Waits before the next attempt (100 ms, doubling to 5 s, while attempts keep failing).
/// Returns true when the consumer went away meanwhile.
async fn pause(tx: &mpsc::Sender<WatchEvent>, failures: &mut u32) -> bool {
    let wait = Duration::from_millis(100) * 2u32.pow((*failures).min(6));
    *failures += 1;
    tokio::select! {
        _ = tx.closed() => true,
        _ = tokio::time::sleep(wait.min(Duration::from_secs(5))) => false,
    }
}

/// One watch request from `at`, forwarding its events; `at` follows the versions received.
async fn watch_once(
    api: &Api<DynamicObject>,
    kind: Kind,
    at: &mut String,
    tx: &mpsc::Sender<WatchEvent>,
    seen: &AtomicU64,
) -> End {
    let params = WatchParams::default().timeout(WATCH_SECONDS);
    let opened = tokio::select! {
        _ = tx.closed() => return End::Closed,
        opened = tokio::time::timeout(SILENCE, api.watch_metadata(&params, at)) => opened,
    };
    let events = match opened {
        Ok(Ok(events)) => events,
        Ok(Err(kube::Error::Api(status))) if status.code == 410 => return End::Gone,
        Ok(Err(e)) => {
            tracing::debug!(%kind, error = %e, "opening a watch failed");
            return End::Resume;
        }
        Err(_) => return End::Resume,
    };
    let mut events = pin!(events);
    loop {
        let next = tokio::select! {
            _ = tx.closed() => return End::Closed,
            next = tokio::time::timeout(SILENCE, events.next()) => next,
        };
        let (object, deleted) = match next {
            Ok(Some(Ok(kube::api::WatchEvent::Added(o) | kube::api::WatchEvent::Modified(o)))) => {
                (o, false)
            }
            Ok(Some(Ok(kube::api::WatchEvent::Deleted(o)))) => (o, true),
            Ok(Some(Ok(kube::api::WatchEvent::Bookmark(b)))) => {
                *at = b.metadata.resource_version;
                continue;
            }
            Ok(Some(Ok(kube::api::WatchEvent::Error(status)))) if status.code == 410 => {
                return End::Gone;
            }
            Ok(Some(Ok(kube::api::WatchEvent::Error(status)))) => {
                tracing::debug!(%kind, ?status, "the watch reported an error");
                return End::Resume;
            }
            Ok(Some(Err(e))) => {
                tracing::debug!(%kind, error = %e, "the watch broke");
                return End::Resume;
            }
            Ok(None) | Err(_) => return End::Resume,
        };
        let version = object.metadata.resource_version.clone();
        if let Some(v) = &version {
            crate::store::record_version(seen, v);
            at.clone_from(v);
        }
        let event = WatchEvent::Changed {
            key: wire::key_of(kind, &object.metadata),
            version: if deleted { None } else { version },
        };
        if tx.send(event).await.is_err() {
            return End::Closed;
        }
    }
}
