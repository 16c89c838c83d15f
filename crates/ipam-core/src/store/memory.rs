//! An in-memory [`Store`]: for tests, examples and embedding where nothing must survive the
//! process.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::broadcast;

use super::semantics::{self, Outcome};
use super::{Deleted, Store, WatchEvent, WatchStream};
use crate::error::Error;
use crate::meta::{Kind, LabelSelector, ObjectKey};

/// A [`Store`] in a `BTreeMap` behind a mutex. Clones share nothing; wrap it in an `Arc` to share.
#[derive(Debug)]
pub struct MemStore {
    objects: Mutex<BTreeMap<ObjectKey, Value>>,
    version: AtomicU64,
    events: broadcast::Sender<WatchEvent>,
}

impl Default for MemStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        MemStore {
            objects: Mutex::new(BTreeMap::new()),
            version: AtomicU64::new(0),
            events: broadcast::channel(1024).0,
        }
    }

    fn next_version(&self) -> String {
        (self.version.fetch_add(1, Ordering::SeqCst) + 1).to_string()
    }

    fn notify(&self, key: ObjectKey, version: Option<String>) {
        // No receiver is not an error: nobody watches.
        let _ = self.events.send(WatchEvent::Changed { key, version });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<ObjectKey, Value>> {
        // A panic while holding the lock leaves whole documents only: keep going.
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self, kind: Kind, object: Value, status_only: bool) -> Result<Value, Error> {
        let key = semantics::key_of(kind, &object)?;
        let mut objects = self.lock();
        let stored = objects
            .get(&key)
            .ok_or_else(|| Error::NotFound(key.clone()))?;
        let version = self.next_version();
        match semantics::update(kind, stored, object, status_only, &version)? {
            Outcome::Put(v) => {
                objects.insert(key.clone(), v.clone());
                drop(objects);
                self.notify(key, Some(version));
                Ok(v)
            }
            Outcome::Remove => {
                let last = objects.remove(&key).expect("present");
                drop(objects);
                self.notify(key, None);
                Ok(last)
            }
        }
    }
}

#[async_trait]
impl Store for MemStore {
    async fn get(&self, key: &ObjectKey) -> Result<Option<Value>, Error> {
        Ok(self.lock().get(key).cloned())
    }

    async fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        selector: Option<&LabelSelector>,
    ) -> Result<Vec<Value>, Error> {
        Ok(self
            .lock()
            .iter()
            .filter(|(k, v)| {
                k.kind == kind
                    && (namespace.is_none()
                        || !kind.is_namespaced()
                        || k.namespace.as_deref() == namespace)
                    && semantics::matches(v, selector)
            })
            .map(|(_, v)| v.clone())
            .collect())
    }

    async fn create(&self, kind: Kind, object: Value) -> Result<Value, Error> {
        let key = semantics::key_of(kind, &object)?;
        let mut objects = self.lock();
        if objects.contains_key(&key) {
            return Err(Error::AlreadyExists(key));
        }
        let version = self.next_version();
        let stored = semantics::create(kind, object, &version, &semantics::now_rfc3339())?;
        objects.insert(key.clone(), stored.clone());
        drop(objects);
        self.notify(key, Some(version));
        Ok(stored)
    }

    async fn update(&self, kind: Kind, object: Value) -> Result<Value, Error> {
        self.write(kind, object, false)
    }

    async fn update_status(&self, kind: Kind, object: Value) -> Result<Value, Error> {
        self.write(kind, object, true)
    }

    async fn delete(&self, key: &ObjectKey, precondition: Option<&str>) -> Result<Deleted, Error> {
        let mut objects = self.lock();
        let stored = objects
            .get(key)
            .ok_or_else(|| Error::NotFound(key.clone()))?;
        let version = self.next_version();
        match semantics::delete(
            key,
            stored,
            precondition,
            &version,
            &semantics::now_rfc3339(),
        )? {
            Outcome::Put(v) => {
                objects.insert(key.clone(), v.clone());
                drop(objects);
                self.notify(key.clone(), Some(version));
                Ok(Deleted::Terminating(v))
            }
            Outcome::Remove => {
                objects.remove(key);
                drop(objects);
                self.notify(key.clone(), None);
                Ok(Deleted::Gone)
            }
        }
    }

    fn watch(&self, kind: Kind) -> WatchStream {
        super::broadcast_watch(self.events.subscribe(), kind)
    }

    fn watches_every_write(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_the_conformance_suite() {
        crate::store::conformance::run_all(MemStore::new).await;
    }
}
