//! Opening a data dir: through the agent that serves it, or under its lock.
//!
//! A data dir has one owner at a time (DESIGN §5). [`open_data_dir`] gives the store of
//! `dir` either way: [`DataDirStore::Agent`] when `<dir>/agent` names a live socket (see
//! [`crate::agent::record`]), otherwise [`DataDirStore::Sled`], the sled store opened under
//! the dir's lock file — waiting for the process that holds it, and looking for an agent
//! again every [`AGENT_POLL`], so an agent that starts meanwhile is used instead of waited
//! for.

use std::path::Path;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ipam_core::store::{Deleted, RecordsDelta, Store, WatchStream};
use ipam_core::{Kind, LabelSelector, ObjectKey};
use ipam_store_sled::{FlushPolicy, OpenError, OpenOptions, SledStore};
use serde_json::Value;

use crate::agent::{AgentStore, record};
use crate::error::Error;

/// How often [`open_data_dir`] looks for an agent while it waits for the lock.
pub const AGENT_POLL: Duration = Duration::from_secs(1);

/// How [`open_data_dir`] opens a data dir.
#[derive(Debug, Clone)]
pub struct DataDirOptions {
    /// How long to wait for another process's lock before failing with
    /// [`berth_cni::Error::TryAgainLater`] (code 11).
    pub lock_timeout: Duration,
    /// How the sled store flushes (group commit by default).
    pub flush_policy: FlushPolicy,
}

impl Default for DataDirOptions {
    fn default() -> Self {
        DataDirOptions {
            lock_timeout: OpenOptions::DEFAULT_LOCK_TIMEOUT,
            flush_policy: FlushPolicy::Group,
        }
    }
}

/// The store of a data dir: the agent's, or the sled store itself.
#[derive(Debug)]
pub enum DataDirStore {
    /// The data dir is served by an agent: every operation is a request to it.
    Agent(AgentStore),
    /// The sled store, held under the data dir's lock until dropped.
    Sled(SledStore),
}

impl DataDirStore {
    /// The agent's socket, when an agent serves the data dir.
    pub fn agent_socket(&self) -> Option<&Path> {
        match self {
            DataDirStore::Agent(a) => Some(a.socket()),
            DataDirStore::Sled(_) => None,
        }
    }

    /// The store behind either variant.
    fn inner(&self) -> &dyn Store {
        match self {
            DataDirStore::Agent(s) => s,
            DataDirStore::Sled(s) => s,
        }
    }
}

/// Opens the store of `dir` (see the [module docs](self)). Blocking work (the lock wait,
/// sled's recovery) runs on tokio's blocking pool.
///
/// Errors: [`berth_cni::Error::TryAgainLater`] (11) when the lock stays taken for
/// `options.lock_timeout`; [`Error::Store`] (102) when the dir or the database cannot be
/// opened (the message says what to do).
pub async fn open_data_dir(dir: &Path, options: &DataDirOptions) -> Result<DataDirStore, Error> {
    open_data_dir_waiting(dir, options, |_| {}).await
}

/// A wait for another process's lock on a data dir, as [`open_data_dir_waiting`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockWait {
    /// The pid the holder wrote into the lock file, if it could be read.
    pub holder: Option<u32>,
    /// How long the open has waited so far.
    pub waited: Duration,
}

/// [`open_data_dir`], calling `waiting` every [`AGENT_POLL`] (about a second) that another
/// process keeps the lock: a command run by a person can say why it does not answer.
pub async fn open_data_dir_waiting(
    dir: &Path,
    options: &DataDirOptions,
    mut waiting: impl FnMut(LockWait),
) -> Result<DataDirStore, Error> {
    let start = Instant::now();
    let deadline = start + options.lock_timeout;
    loop {
        if let Some(socket) = record::live_agent(dir).await {
            tracing::debug!(data_dir = %dir.display(), socket = %socket.display(), "the data dir is served by a berth agent; going through it");
            return Ok(DataDirStore::Agent(AgentStore::new(socket)));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let open = OpenOptions::new()
            .lock_timeout(left.min(AGENT_POLL))
            .flush_policy(options.flush_policy);
        let path = dir.to_path_buf();
        let opened = tokio::task::spawn_blocking(move || SledStore::open(&path, open))
            .await
            .map_err(|e| Error::internal("opening the store", Some(Box::new(e))))?;
        match opened {
            Ok(store) => return Ok(DataDirStore::Sled(store)),
            Err(OpenError::Locked { holder, .. }) if Instant::now() < deadline => {
                waiting(LockWait {
                    holder,
                    waited: start.elapsed(),
                });
            }
            Err(OpenError::Locked { dir: d, holder, .. }) => {
                return Err(open_error(OpenError::Locked {
                    dir: d,
                    holder,
                    waited: options.lock_timeout,
                }));
            }
            Err(e) => return Err(open_error(e)),
        }
    }
}

/// A sled open failure as this crate's error: a lock held too long is transient (11), the
/// rest is the store's (102).
pub(crate) fn open_error(e: OpenError) -> Error {
    match e {
        OpenError::Locked { .. } => {
            Error::Cni(berth_cni::Error::try_again_later("the data dir is busy", e))
        }
        other => Error::Store {
            msg: "cannot open the data dir".into(),
            source: Some(Box::new(other)),
        },
    }
}

/// Every method forwards to the store behind (one left out would silently take the trait's
/// default instead of the backend's own).
#[async_trait]
impl Store for DataDirStore {
    async fn get(&self, key: &ObjectKey) -> Result<Option<Value>, ipam_core::Error> {
        self.inner().get(key).await
    }

    async fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        selector: Option<&LabelSelector>,
    ) -> Result<Vec<Value>, ipam_core::Error> {
        self.inner().list(kind, namespace, selector).await
    }

    async fn list_current(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        selector: Option<&LabelSelector>,
    ) -> Result<Vec<Value>, ipam_core::Error> {
        self.inner().list_current(kind, namespace, selector).await
    }

    async fn create(&self, kind: Kind, object: Value) -> Result<Value, ipam_core::Error> {
        self.inner().create(kind, object).await
    }

    async fn update(&self, kind: Kind, object: Value) -> Result<Value, ipam_core::Error> {
        self.inner().update(kind, object).await
    }

    async fn update_status(&self, kind: Kind, object: Value) -> Result<Value, ipam_core::Error> {
        self.inner().update_status(kind, object).await
    }

    async fn delete(
        &self,
        key: &ObjectKey,
        precondition: Option<&str>,
    ) -> Result<Deleted, ipam_core::Error> {
        self.inner().delete(key, precondition).await
    }

    async fn update_pool_records(
        &self,
        name: &str,
        version: &str,
        delta: &RecordsDelta,
    ) -> Result<String, ipam_core::Error> {
        self.inner().update_pool_records(name, version, delta).await
    }

    async fn sync(&self) -> Result<(), ipam_core::Error> {
        self.inner().sync().await
    }

    fn watch(&self, kind: Kind) -> WatchStream {
        self.inner().watch(kind)
    }

    fn watches_every_write(&self) -> bool {
        self.inner().watches_every_write()
    }
}
