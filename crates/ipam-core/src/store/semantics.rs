//! The Kubernetes write rules every backend applies, as pure functions on JSON documents.
//!
//! A backend reads the stored document, calls one of these under its own concurrency control
//! (a mutex, a compare-and-swap, a transaction), and stores what they return. The rules thus
//! live in one place and the conformance suite checks that a backend wired them up.

use serde_json::{Map, Value};

use crate::error::Error;
use crate::meta::{Kind, LabelSelector, ObjectKey};

/// What to store after a write.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Store this document.
    Put(Value),
    /// Remove the document (the last finalizer of a terminating object went).
    Remove,
}

/// The key of a document of `kind`, validating name and namespace.
pub fn key_of(kind: Kind, object: &Value) -> Result<ObjectKey, Error> {
    let meta = object.get("metadata").and_then(Value::as_object);
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    if name.is_empty() {
        return Err(Error::Malformed {
            kind,
            name: String::new(),
            reason: "metadata.name is missing".into(),
        });
    }
    let namespace = if kind.is_namespaced() {
        Some(
            meta.and_then(|m| m.get("namespace"))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .unwrap_or("default")
                .to_string(),
        )
    } else {
        None
    };
    // What Kubernetes refuses in any name that is a path segment; backends may then encode keys
    // with `/` or NUL as separators.
    for (what, v) in [
        ("metadata.name", Some(name)),
        ("metadata.namespace", namespace.as_deref()),
    ] {
        let Some(v) = v else { continue };
        if v.len() > 253 || v == "." || v == ".." || v.contains(['/', '\0', '%']) {
            return Err(Error::Malformed {
                kind,
                name: name.to_string(),
                reason: format!(
                    "{what} {v:?} cannot be stored: no '/', '%' or NUL, not '.' or '..', at most 253 bytes"
                ),
            });
        }
    }
    Ok(ObjectKey {
        kind,
        namespace,
        name: name.to_string(),
    })
}

fn meta_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = Value::Object(Map::new());
    }
    object["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str()
}

/// The stored version of a document.
pub fn version_of(object: &Value) -> Option<&str> {
    meta_str(object, "resourceVersion")
}

fn finalizers_empty(object: &Value) -> bool {
    object
        .get("metadata")
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .is_none_or(|a| a.is_empty())
}

/// A document ready to be created: namespace defaulted (or removed for cluster kinds), uid,
/// creation time, generation and `version` set, deletion time cleared.
pub fn create(kind: Kind, mut object: Value, version: &str, now: &str) -> Result<Value, Error> {
    let key = key_of(kind, &object)?;
    if !object.is_object() {
        return Err(Error::Malformed {
            kind,
            name: key.name,
            reason: "not a JSON object".into(),
        });
    }
    object["apiVersion"] = Value::from(kind.api_version());
    object["kind"] = Value::from(kind.name());
    let meta = meta_mut(&mut object);
    match key.namespace {
        Some(ns) => {
            meta.insert("namespace".into(), Value::from(ns));
        }
        None => {
            meta.remove("namespace");
        }
    }
    if meta
        .get("uid")
        .and_then(Value::as_str)
        .is_none_or(|u| u.is_empty())
    {
        meta.insert("uid".into(), Value::from(uuid::Uuid::new_v4().to_string()));
    }
    meta.insert("creationTimestamp".into(), Value::from(now));
    meta.insert("resourceVersion".into(), Value::from(version));
    meta.insert("generation".into(), Value::from(1));
    meta.remove("deletionTimestamp");
    Ok(object)
}

/// Checks `new`'s version (when it carries one) against the stored document.
fn check_version(key: &ObjectKey, stored: &Value, new: &Value) -> Result<(), Error> {
    match version_of(new) {
        Some(v) if Some(v) != version_of(stored) => Err(Error::Conflict(key.clone())),
        _ => Ok(()),
    }
}

/// The document after an `update` (`status_only == false`) or `update_status`.
pub fn update(
    kind: Kind,
    stored: &Value,
    new: Value,
    status_only: bool,
    version: &str,
) -> Result<Outcome, Error> {
    let key = key_of(kind, &new)?;
    check_version(&key, stored, &new)?;
    let mut out = if status_only {
        let mut out = stored.clone();
        match new.get("status") {
            Some(s) => out["status"] = s.clone(),
            None => {
                if let Some(o) = out.as_object_mut() {
                    o.remove("status");
                }
            }
        }
        out
    } else {
        let mut out = new;
        out["apiVersion"] = Value::from(kind.api_version());
        out["kind"] = Value::from(kind.name());
        if kind.has_status_subresource() {
            match stored.get("status") {
                Some(s) => out["status"] = s.clone(),
                None => {
                    if let Some(o) = out.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
        }
        let spec_changed = out.get("spec") != stored.get("spec");
        let generation = stored
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        // Identity and lifecycle fields are the store's, never the caller's.
        let meta = meta_mut(&mut out);
        for field in ["uid", "creationTimestamp", "deletionTimestamp", "namespace"] {
            match stored.pointer(&format!("/metadata/{field}")) {
                Some(v) => {
                    meta.insert(field.into(), v.clone());
                }
                None => {
                    meta.remove(field);
                }
            }
        }
        meta.insert(
            "generation".into(),
            Value::from(generation + i64::from(spec_changed)),
        );
        out
    };
    if meta_str(&out, "deletionTimestamp").is_some() && finalizers_empty(&out) {
        return Ok(Outcome::Remove);
    }
    meta_mut(&mut out).insert("resourceVersion".into(), Value::from(version));
    Ok(Outcome::Put(out))
}

/// The document after a `delete`: removed, or marked terminating when finalizers hold it.
pub fn delete(
    key: &ObjectKey,
    stored: &Value,
    precondition: Option<&str>,
    version: &str,
    now: &str,
) -> Result<Outcome, Error> {
    if let Some(p) = precondition
        && Some(p) != version_of(stored)
    {
        return Err(Error::Conflict(key.clone()));
    }
    if finalizers_empty(stored) {
        return Ok(Outcome::Remove);
    }
    let mut out = stored.clone();
    let meta = meta_mut(&mut out);
    if !meta.contains_key("deletionTimestamp") {
        meta.insert("deletionTimestamp".into(), Value::from(now));
    }
    meta.insert("resourceVersion".into(), Value::from(version));
    Ok(Outcome::Put(out))
}

/// Whether a document's labels match `selector` (no selector matches everything).
pub fn matches(object: &Value, selector: Option<&LabelSelector>) -> bool {
    let Some(sel) = selector else {
        return true;
    };
    let labels = object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    sel.matches(&labels)
}

/// The current time as Kubernetes writes it (RFC 3339, seconds).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
