//! Pools: their documents stored apart from their allocation records (see `records`), put back
//! together on every read, and the records delta an allocation writes.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipam_core::store::semantics::{self, Outcome};
use ipam_core::store::{RecordsDelta, WatchEvent};
use ipam_core::{Error, Kind, LabelSelector, ObjectKey};
use serde_json::Value;

use super::SledStore;
use super::objects::{parse, serialize};
use crate::commit::Ticket;
use crate::journal::Change;
use crate::layout;
use crate::records;

impl SledStore {
    /// A pool with its records put back, read under the write lock so that the document and the
    /// records are of one moment.
    pub(super) fn read_pool(
        &self,
        key: &ObjectKey,
        sled_key: &[u8],
    ) -> Result<Option<Value>, Error> {
        let _order = self.order();
        self.read_pool_locked(key, sled_key)
    }

    fn read_pool_locked(&self, key: &ObjectKey, sled_key: &[u8]) -> Result<Option<Value>, Error> {
        let Some(bytes) = self.read(key, sled_key)? else {
            return Ok(None);
        };
        let mut doc = parse(key, &bytes)?;
        let stored = self
            .shared
            .scan(Kind::SpiderIPPool, &records::prefix(sled_key), &[])
            .map_err(|e| Error::backend(format!("read the records of {key}"), e))?;
        records::load(key, sled_key, &stored, &mut doc)?;
        Ok(Some(doc))
    }

    /// Every pool matching `selector`, with its records, read under the write lock (see
    /// `read_pool`). A pool's records follow its document in the tree (`name`, then
    /// `name 0x00 ip`, …), so one scan in key order meets each document just before its records.
    pub(super) fn list_pools(&self, selector: Option<&LabelSelector>) -> Result<Vec<Value>, Error> {
        let _order = self.order();
        let entries = self
            .shared
            .scan(Kind::SpiderIPPool, &[], &[])
            .map_err(|e| Error::backend("list spiderippools", e))?;
        let mut out = Vec::new();
        let mut at = 0;
        while at < entries.len() {
            let (k, bytes) = &entries[at];
            at += 1;
            if records::is_record(k) {
                // A record without its document (never written so): step over it.
                continue;
            }
            let prefix = records::prefix(k);
            let end = at
                + entries[at..]
                    .iter()
                    .take_while(|(r, _)| r.starts_with(&prefix))
                    .count();
            let key = layout::decode_key(Kind::SpiderIPPool, k);
            let mut value = parse(&key, bytes)?;
            if semantics::matches(&value, selector) {
                records::load(&key, k, &entries[at..end], &mut value)?;
                out.push(value);
            }
            at = end;
        }
        Ok(out)
    }

    /// `Store::create` of a pool: its document and records in one batch, where nothing was.
    pub(super) async fn create_pool(
        &self,
        key: ObjectKey,
        sled_key: &[u8],
        stored: Value,
        version: String,
    ) -> Result<Value, Error> {
        let ticket = {
            let _order = self.order();
            if self.read(&key, sled_key)?.is_some() {
                return Err(Error::AlreadyExists(key));
            }
            let batch = put_pool(&key, sled_key, &BTreeMap::new(), &stored)?;
            self.commit_pool(&key, &batch, Some(version))
        };
        self.durable(&key, ticket).await?;
        Ok(stored)
    }

    /// `Store::update_pool_records`: the document and the changed records only, in one atomic
    /// batch, so that an allocation costs the same whatever the pool holds.
    pub(super) async fn update_records(
        &self,
        name: &str,
        version: &str,
        delta: &RecordsDelta,
    ) -> Result<String, Error> {
        let key = ObjectKey::cluster(Kind::SpiderIPPool, name);
        let sled_key = layout::encode_key(&key).ok_or_else(|| Error::NotFound(key.clone()))?;
        let (ticket, new) = {
            let _order = self.order();
            let Some(bytes) = self.read(&key, &sled_key)? else {
                return Err(Error::NotFound(key));
            };
            let mut doc = parse(&key, &bytes)?;
            if semantics::version_of(&doc) != Some(version) {
                return Err(Error::Conflict(key));
            }
            let new = self.next_version()?;
            doc["metadata"]["resourceVersion"] = Value::from(new.as_str());
            if !doc.get("status").is_some_and(Value::is_object) {
                doc["status"] = Value::Object(Default::default());
            }
            let status = &mut doc["status"];
            status["allocatedIPCount"] = Value::from(delta.allocated_ip_count);
            status["totalIPCount"] = Value::from(delta.total_ip_count);
            match delta.last_allocated_ip {
                Some(ip) => status["lastAllocatedIP"] = Value::from(ip.to_string()),
                None => {
                    if let Some(o) = status.as_object_mut() {
                        o.remove("lastAllocatedIP");
                    }
                }
            }
            let mut batch = vec![put(sled_key.as_slice(), serialize(&key, &doc)?)];
            for ip in &delta.remove {
                batch.push(remove(records::key(&sled_key, ip)));
            }
            for (ip, rec) in &delta.set {
                let rec = serde_json::to_value(rec)
                    .map_err(|e| Error::backend(format!("write {key}"), e))?;
                batch.push(put(records::key(&sled_key, ip), serialize(&key, &rec)?));
            }
            (self.commit_pool(&key, &batch, Some(new.clone())), new)
        };
        self.durable(&key, ticket).await?;
        Ok(new)
    }

    /// Lands the changes of one pool write, as one journal record, under the write lock the
    /// caller holds.
    fn commit_pool(&self, key: &ObjectKey, batch: &[Change], version: Option<String>) -> Ticket {
        let event = WatchEvent::Changed {
            key: key.clone(),
            version,
        };
        self.land(batch, event)
    }

    /// `rewrite` of a pool: the whole document with its records, written back as the document
    /// and the records that changed.
    pub(super) fn rewrite_pool(
        &self,
        key: &ObjectKey,
        sled_key: &[u8],
        step: &mut (impl FnMut(&Value, &str) -> Result<Outcome, Error> + Send),
    ) -> Result<(Arc<Value>, Outcome, Ticket), Error> {
        let _order = self.order();
        let Some(stored) = self.read_pool_locked(key, sled_key)? else {
            return Err(Error::NotFound(key.clone()));
        };
        let version = self.next_version()?;
        let outcome = step(&stored, &version)?;
        let mut stored_doc = stored.clone();
        let old = records::split(key, &mut stored_doc)?;
        let (batch, event_version) = match &outcome {
            Outcome::Put(v) => (put_pool(key, sled_key, &old, v)?, Some(version)),
            Outcome::Remove => {
                let mut batch = vec![remove(sled_key)];
                for ip in old.keys() {
                    batch.push(remove(records::key(sled_key, ip)));
                }
                (batch, None)
            }
        };
        let ticket = self.commit_pool(key, &batch, event_version);
        Ok((Arc::new(stored), outcome, ticket))
    }
}

/// The changes writing the pool document `pool` over one whose records were `old`: the
/// document without its records, the records that changed, the removal of those that went.
fn put_pool(
    key: &ObjectKey,
    sled_key: &[u8],
    old: &BTreeMap<IpAddr, Value>,
    pool: &Value,
) -> Result<Vec<Change>, Error> {
    let mut doc = pool.clone();
    let new = records::split(key, &mut doc)?;
    let mut batch = vec![put(sled_key, serialize(key, &doc)?)];
    for ip in old.keys().filter(|ip| !new.contains_key(ip)) {
        batch.push(remove(records::key(sled_key, ip)));
    }
    for (ip, rec) in &new {
        if old.get(ip) != Some(rec) {
            batch.push(put(records::key(sled_key, ip), serialize(key, rec)?));
        }
    }
    Ok(batch)
}

fn put(key: impl Into<Vec<u8>>, value: Vec<u8>) -> Change {
    Change::put(Kind::SpiderIPPool, key, value)
}

fn remove(key: impl Into<Vec<u8>>) -> Change {
    Change::remove(Kind::SpiderIPPool, key)
}
