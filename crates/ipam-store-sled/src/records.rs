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
//! changed, as one journal record (atomic). No pool name contains a NUL, so a name's records are the
//! keys under `name 0x00`, and a scan of the tree tells documents from records by the NUL.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use ipam_core::{Error, Kind, ObjectKey};
use serde::de::IgnoredAny;
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
/// Each record's stored JSON is copied into the string as it is, not decoded and re-encoded;
/// it is only checked to be one JSON value, so a damaged record is reported by its IP.
pub(crate) fn join(
    key: &ObjectKey,
    doc: &mut Value,
    records: &BTreeMap<IpAddr, impl AsRef<[u8]>>,
) -> Result<(), Error> {
    if records.is_empty() {
        return Ok(());
    }
    let size = records.values().map(|r| r.as_ref().len() + 48).sum();
    let mut text = String::with_capacity(size);
    text.push('{');
    for (ip, rec) in records {
        let rec = rec.as_ref();
        serde_json::from_slice::<IgnoredAny>(rec)
            .map_err(|e| malformed(key, format!("the stored record of {ip} is not JSON: {e}")))?;
        let rec = std::str::from_utf8(rec)
            .map_err(|e| malformed(key, format!("the stored record of {ip} is not UTF-8: {e}")))?;
        if text.len() > 1 {
            text.push(',');
        }
        // An IP's text needs no escaping.
        let _ = write!(text, "\"{ip}\":{rec}");
    }
    text.push('}');
    if !doc.get("status").is_some_and(Value::is_object) {
        doc["status"] = Value::Object(Default::default());
    }
    doc["status"]["allocatedIPs"] = Value::String(text);
    Ok(())
}

/// Puts the records stored under a pool back into its document (see [`join`]): `stored` is
/// the pool tree's entries under the pool's record prefix.
pub(crate) fn load(
    key: &ObjectKey,
    sled_key: &[u8],
    stored: &[(sled::IVec, sled::IVec)],
    doc: &mut Value,
) -> Result<(), Error> {
    let p = prefix(sled_key);
    let mut records = BTreeMap::new();
    for (k, v) in stored {
        let ip_text = String::from_utf8_lossy(&k[p.len()..]);
        let ip: IpAddr = ip_text
            .parse()
            .map_err(|_| malformed(key, format!("a stored record has the key {ip_text:?}")))?;
        records.insert(ip, v);
    }
    join(key, doc, &records)
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
        let stored: BTreeMap<IpAddr, Vec<u8>> = records
            .iter()
            .map(|(ip, r)| (*ip, serde_json::to_vec(r).unwrap()))
            .collect();
        join(&key, &mut doc, &stored).unwrap();
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

    #[test]
    fn a_damaged_record_is_reported_by_its_ip() {
        let key = ObjectKey::cluster(Kind::SpiderIPPool, "p");
        let mut doc = json!({"metadata": {"name": "p"}});
        let stored: BTreeMap<IpAddr, &[u8]> = [
            ("10.0.0.1".parse().unwrap(), &br#"{"pod":"ns/a"}"#[..]),
            ("10.0.0.2".parse().unwrap(), &br#"{"pod":"ns/b""#[..]),
        ]
        .into();
        let err = join(&key, &mut doc, &stored).unwrap_err().to_string();
        assert!(
            err.contains("10.0.0.2") && err.contains("not JSON"),
            "{err}"
        );
        let stored: BTreeMap<IpAddr, &[u8]> =
            [("10.0.0.1".parse().unwrap(), &br#"{"pod":"ns/a"} {}"#[..])].into();
        assert!(
            join(&key, &mut doc, &stored).is_err(),
            "one value per record"
        );
    }
}
