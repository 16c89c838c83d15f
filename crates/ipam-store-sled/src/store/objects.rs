//! Documents written one at a time: read, compute the new document from the stored one, and
//! compare-and-swap it in, in the order writes land, durable before the caller hears back.

use std::sync::Arc;

use ipam_core::store::semantics::{self, Outcome};
use ipam_core::store::{Deleted, WatchEvent};
use ipam_core::{Error, Kind, LabelSelector, ObjectKey};
use serde_json::Value;

use super::SledStore;
use crate::commit::Ticket;
use crate::journal::Change;
use crate::layout;

/// How many times a write re-reads an object whose stored bytes changed between its read and
/// its compare-and-swap before giving up with `RetriesExhausted`. Each failure means another
/// write of this process landed, so this is never reached in practice.
const MAX_ATTEMPTS: u32 = 1000;

impl SledStore {
    /// A document of a kind stored whole (not a pool).
    pub(super) fn get_object(
        &self,
        key: &ObjectKey,
        sled_key: &[u8],
    ) -> Result<Option<Value>, Error> {
        self.read(key, sled_key)?
            .map(|bytes| parse(key, &bytes))
            .transpose()
    }

    /// Every document of a kind stored whole (not pools) matching `selector`, by key order.
    pub(super) fn list_objects(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        selector: Option<&LabelSelector>,
    ) -> Result<Vec<Value>, Error> {
        let prefix = match namespace {
            Some(ns) if kind.is_namespaced() => match layout::namespace_prefix(ns) {
                Some(prefix) => prefix,
                None => return Ok(Vec::new()),
            },
            // A namespace means nothing to a cluster-scoped kind (Kubernetes ignores it).
            _ => Vec::new(),
        };
        let entries = self
            .shared
            .scan(kind, &prefix, &[])
            .map_err(|e| Error::backend(format!("list {}", kind.plural()), e))?;
        let mut out = Vec::new();
        for (k, bytes) in entries {
            let key = layout::decode_key(kind, &k);
            let value = parse(&key, &bytes)?;
            if semantics::matches(&value, selector) {
                out.push(value);
            }
        }
        Ok(out)
    }

    /// `Store::create`: the document, with its version, swapped in where nothing was (a pool
    /// goes in with its records apart, see `create_pool`).
    pub(super) async fn create_object(&self, kind: Kind, object: Value) -> Result<Value, Error> {
        let key = semantics::key_of(kind, &object)?;
        let sled_key = layout::encode_key(&key).ok_or_else(|| Error::Malformed {
            kind,
            name: key.name.clone(),
            reason: "metadata.namespace contains a NUL character".into(),
        })?;
        let version = self.next_version()?;
        let stored = semantics::create(kind, object, &version, &semantics::now_rfc3339())?;
        if kind == Kind::SpiderIPPool {
            return self.create_pool(key, &sled_key, stored, version).await;
        }
        let bytes = sled::IVec::from(serialize(&key, &stored)?);
        let Some(ticket) = self.swap(&key, &sled_key, None, Some((bytes, &version)))? else {
            return Err(Error::AlreadyExists(key));
        };
        self.durable(&key, ticket).await?;
        Ok(stored)
    }

    pub(super) async fn write(
        &self,
        kind: Kind,
        object: Value,
        status_only: bool,
    ) -> Result<Value, Error> {
        let key = semantics::key_of(kind, &object)?;
        let (stored, outcome) = self
            .rewrite(&key, |stored, version| {
                semantics::update(kind, stored, object.clone(), status_only, version)
            })
            .await?;
        Ok(match outcome {
            Outcome::Put(v) => v,
            // As the in-memory store: the object as it was before its last finalizer went.
            Outcome::Remove => (*stored).clone(),
        })
    }

    /// `Store::delete`: a rewrite to the terminating document, or to nothing.
    pub(super) async fn delete_object(
        &self,
        key: &ObjectKey,
        precondition: Option<&str>,
    ) -> Result<Deleted, Error> {
        let now = semantics::now_rfc3339();
        let (_, outcome) = self
            .rewrite(key, |stored, version| {
                semantics::delete(key, stored, precondition, version, &now)
            })
            .await?;
        Ok(match outcome {
            Outcome::Put(v) => Deleted::Terminating(v),
            Outcome::Remove => Deleted::Gone,
        })
    }

    pub(super) fn read(
        &self,
        key: &ObjectKey,
        sled_key: &[u8],
    ) -> Result<Option<sled::IVec>, Error> {
        self.shared
            .get(key.kind, sled_key)
            .map_err(|e| Error::backend(format!("read {key}"), e))
    }

    /// Compare-and-swap of `key` from `old` to `new` (absent when `None`); on success, takes a
    /// ticket and tells watchers, in the order the writes landed. `Ok(None)` when the stored
    /// value was not `old`.
    pub(super) fn swap(
        &self,
        key: &ObjectKey,
        sled_key: &[u8],
        old: Option<&[u8]>,
        new: Option<(sled::IVec, &str)>,
    ) -> Result<Option<Ticket>, Error> {
        let version = new.as_ref().map(|(_, v)| v.to_string());
        let _order = self.order();
        let current = self.read(key, sled_key)?;
        if current.as_deref() != old {
            return Ok(None);
        }
        let change = Change {
            kind: key.kind,
            key: sled_key.to_vec(),
            value: new.map(|(bytes, _)| bytes),
        };
        let event = WatchEvent::Changed {
            key: key.clone(),
            version,
        };
        Ok(Some(self.land(&[change], event)))
    }

    pub(super) async fn durable(&self, key: &ObjectKey, ticket: Ticket) -> Result<(), Error> {
        // Inside `deferring_durability` the caller syncs once at the end (see `Store::sync`).
        if ipam_core::store::durability_deferred() {
            return Ok(());
        }
        self.commit
            .durable(ticket)
            .await
            .map_err(|e| Error::backend(format!("flush after writing {key}"), e))?;
        self.checkpoint_when_due();
        Ok(())
    }

    /// Reads `key`, lets `step` compute the write from the stored document and a fresh version,
    /// and swaps it in; re-reads and recomputes when another write landed in between. Returns
    /// the document `step` saw and what it decided, once durable.
    pub(super) async fn rewrite(
        &self,
        key: &ObjectKey,
        mut step: impl FnMut(&Value, &str) -> Result<Outcome, Error> + Send,
    ) -> Result<(Arc<Value>, Outcome), Error> {
        let sled_key = layout::encode_key(key).ok_or_else(|| Error::NotFound(key.clone()))?;
        if key.kind == Kind::SpiderIPPool {
            let (stored, outcome, ticket) = self.rewrite_pool(key, &sled_key, &mut step)?;
            self.durable(key, ticket).await?;
            return Ok((stored, outcome));
        }
        for _ in 0..MAX_ATTEMPTS {
            let Some(old) = self.read(key, &sled_key)? else {
                return Err(Error::NotFound(key.clone()));
            };
            let stored = Arc::new(parse(key, &old)?);
            // Taken after the read: a write that lands has a version above every earlier
            // write of the same object.
            let version = self.next_version()?;
            let outcome = step(&stored, &version)?;
            let new = match &outcome {
                Outcome::Put(v) => Some((sled::IVec::from(serialize(key, v)?), version.as_str())),
                Outcome::Remove => None,
            };
            if let Some(ticket) = self.swap(key, &sled_key, Some(&old), new)? {
                self.durable(key, ticket).await?;
                return Ok((stored, outcome));
            }
        }
        Err(Error::RetriesExhausted {
            key: key.clone(),
            attempts: MAX_ATTEMPTS,
        })
    }
}

pub(super) fn parse(key: &ObjectKey, bytes: &[u8]) -> Result<Value, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::Malformed {
        kind: key.kind,
        name: key.name.clone(),
        reason: format!("stored document is not JSON: {e}"),
    })
}

pub(super) fn serialize(key: &ObjectKey, value: &Value) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value).map_err(|e| Error::Malformed {
        kind: key.kind,
        name: key.name.clone(),
        reason: e.to_string(),
    })
}
