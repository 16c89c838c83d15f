//! Pools stored apart from their allocation records.
//!
//! A SpiderIPPool's `status.allocatedIPs` holds one record per allocated IP, as one JSON string
//! (Spiderpool's format). Stored whole, every allocation would rewrite every record of the pool.
//! So the pool tree holds, for a pool `name`:
//!
//! ```text
//! name             the pool's document without status.allocatedIPs
//! name 0x00 ip     one record: {"pod": ..., "podUid": ..., ...}
//! ```
//!
//! Reads put the records back into the document, so callers see Spiderpool's format; an
//! allocation (`update_pool_records`) writes the document (small now) and the records that
//! changed, in one atomic sled batch. No pool name contains a NUL, so a name's records are the
//! keys under `name 0x00`, and a scan of the tree tells documents from records by the NUL.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipam_core::{Error, Kind, ObjectKey};
use serde_json::Value;

/// The key prefix of a pool's records.
pub(crate) fn prefix(sled_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(sled_key.len() + 1);
    k.extend_from_slice(sled_key);
    k.push(0);
    k
}

/// The key of one record.
pub(crate) fn key(sled_key: &[u8], ip: &IpAddr) -> Vec<u8> {
    let mut k = prefix(sled_key);
    k.extend_from_slice(ip.to_string().as_bytes());
    k
}

/// Whether a key of the pool tree is a record (not a document).
pub(crate) fn is_record(k: &[u8]) -> bool {
    k.contains(&0)
}

fn malformed(key: &ObjectKey, reason: String) -> Error {
    Error::Malformed {
        kind: Kind::SpiderIPPool,
        name: key.name.clone(),
        reason,
    }
}

/// Takes `status.allocatedIPs` out of a pool document: the records by IP.
pub(crate) fn split(key: &ObjectKey, doc: &mut Value) -> Result<BTreeMap<IpAddr, Value>, Error> {
    let Some(blob) = doc
        .get_mut("status")
        .and_then(Value::as_object_mut)
        .and_then(|s| s.remove("allocatedIPs"))
    else {
        return Ok(BTreeMap::new());
    };
    let map = match blob {
        Value::String(text) => serde_json::from_str::<Value>(&text)
            .map_err(|e| malformed(key, format!("status.allocatedIPs is not JSON: {e}")))?,
        Value::Null => return Ok(BTreeMap::new()),
        other => other,
    };
    let Value::Object(entries) = map else {
        return Err(malformed(
            key,
            "status.allocatedIPs is not a map of IPs".into(),
        ));
    };
    entries
        .into_iter()
        .map(|(ip, rec)| {
            let ip: IpAddr = ip.parse().map_err(|_| {
                malformed(
                    key,
                    format!("status.allocatedIPs has a key {ip:?} that is not an IP"),
                )
            })?;
            Ok((ip, rec))
        })
        .collect()
}

/// Puts records back into a pool document as Spiderpool's string (absent when there are none).
pub(crate) fn join(
    key: &ObjectKey,
    doc: &mut Value,
    records: BTreeMap<IpAddr, Value>,
) -> Result<(), Error> {
    if records.is_empty() {
        return Ok(());
    }
    let map: serde_json::Map<String, Value> = records
        .into_iter()
        .map(|(ip, r)| (ip.to_string(), r))
        .collect();
    let text = serde_json::to_string(&map).map_err(|e| malformed(key, e.to_string()))?;
    if !doc.get("status").is_some_and(Value::is_object) {
        doc["status"] = Value::Object(Default::default());
    }
    doc["status"]["allocatedIPs"] = Value::String(text);
    Ok(())
}

/// The records stored under a pool, by IP.
pub(crate) fn load(
    tree: &sled::Tree,
    key: &ObjectKey,
    sled_key: &[u8],
) -> Result<BTreeMap<IpAddr, Value>, Error> {
    let p = prefix(sled_key);
    let mut out = BTreeMap::new();
    for entry in tree.scan_prefix(&p) {
        let (k, v) = entry.map_err(|e| Error::backend(format!("read the records of {key}"), e))?;
        let ip_text = String::from_utf8_lossy(&k[p.len()..]).to_string();
        let ip: IpAddr = ip_text
            .parse()
            .map_err(|_| malformed(key, format!("a stored record has the key {ip_text:?}")))?;
        let rec: Value = serde_json::from_slice(&v)
            .map_err(|e| malformed(key, format!("a stored record of {ip} is not JSON: {e}")))?;
        out.insert(ip, rec);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn split_and_join_are_inverse_and_keep_spiderpools_string() {
        let key = ObjectKey::cluster(Kind::SpiderIPPool, "p");
        let blob =
            r#"{"10.0.0.9":{"pod":"ns/b","podUid":"2"},"10.0.0.10":{"pod":"ns/a","podUid":"1"}}"#;
        let mut doc = json!({"metadata": {"name": "p"}, "status": {"allocatedIPCount": 2, "allocatedIPs": blob}});
        let records = split(&key, &mut doc).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(doc["status"], json!({"allocatedIPCount": 2}));
        join(&key, &mut doc, records).unwrap();
        let again: Value =
            serde_json::from_str(doc["status"]["allocatedIPs"].as_str().unwrap()).unwrap();
        assert_eq!(again, serde_json::from_str::<Value>(blob).unwrap());
        let mut bad = json!({"status": {"allocatedIPs": "{\"x\": {}}"}});
        assert!(
            split(&key, &mut bad)
                .unwrap_err()
                .to_string()
                .contains("not an IP")
        );
        assert!(is_record(&super::key(b"p", &"10.0.0.1".parse().unwrap())));
        assert!(!is_record(b"p"));
    }
}
