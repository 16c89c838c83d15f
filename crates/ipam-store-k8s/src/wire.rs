//! Between ipam-core's documents and the API server: which resource a kind is, what of a
//! document the server owns, label selectors as query strings, and the server's answers as
//! `ipam_core::Error`s.

use ipam_core::store::semantics;
use ipam_core::{Error, Kind, LabelSelector, ObjectKey};
use kube::api::{ApiResource, DynamicObject, ObjectMeta};
use serde_json::{Map, Value};

/// The API resource of `kind`: Spiderpool's CRDs, or apps/v1 for the workloads.
pub(crate) fn resource(kind: Kind) -> ApiResource {
    let (group, version) = match kind {
        Kind::Deployment | Kind::StatefulSet => ("apps", "v1"),
        _ => (crate::v2beta1::GROUP, crate::v2beta1::VERSION),
    };
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: kind.api_version().into(),
        kind: kind.name().into(),
        plural: kind.plural().into(),
    }
}

/// Metadata the API server sets, which a request must not carry: on a create it refuses a
/// `resourceVersion`; on an update a `uid` is a precondition and a `deletionTimestamp` may not
/// appear; the rest it ignores or overwrites. The store's caller owns none of them (DESIGN §3).
const SERVER_OWNED: [&str; 7] = [
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "managedFields",
    "selfLink",
];

/// `object` as a request body for `key`: `apiVersion` and `kind` set, the namespace the key's,
/// the server-owned metadata removed, and `resourceVersion` set to `version` (removed if
/// `None`).
pub(crate) fn request(
    key: &ObjectKey,
    mut object: Value,
    version: Option<&str>,
) -> Result<DynamicObject, Error> {
    if !object.is_object() {
        return Err(malformed(key, "not a JSON object"));
    }
    object["apiVersion"] = Value::from(key.kind.api_version());
    object["kind"] = Value::from(key.kind.name());
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = Value::Object(Map::new());
    }
    let meta = object["metadata"]
        .as_object_mut()
        .expect("metadata is an object");
    for field in SERVER_OWNED {
        meta.remove(field);
    }
    match &key.namespace {
        Some(ns) => meta.insert("namespace".into(), Value::from(ns.as_str())),
        None => meta.remove("namespace"),
    };
    match version {
        Some(v) => meta.insert("resourceVersion".into(), Value::from(v)),
        None => meta.remove("resourceVersion"),
    };
    serde_json::from_value(object).map_err(|e| malformed(key, &e.to_string()))
}

/// A document as the store hands it out: the object the API server returned, without
/// `managedFields` (the server's bookkeeping of field owners, as long as the object itself
/// and of no use to the engine; kubectl hides it too).
pub(crate) fn document(object: DynamicObject) -> Value {
    let mut value = serde_json::to_value(object).expect("an API object serializes");
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    value
}

/// The key of an object the API server returned, from its metadata.
pub(crate) fn key_of(kind: Kind, metadata: &ObjectMeta) -> ObjectKey {
    ObjectKey {
        kind,
        namespace: metadata.namespace.clone().filter(|_| kind.is_namespaced()),
        name: metadata.name.clone().unwrap_or_default(),
    }
}

/// Whether a document returned by a delete is still there: terminating, held by finalizers.
pub(crate) fn is_terminating(object: &DynamicObject) -> bool {
    object.metadata.deletion_timestamp.is_some()
        && object
            .metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| !f.is_empty())
}

/// The `labelSelector` query of `selector`; `None` when it can match nothing.
///
/// The API server refuses malformed requirements that the other backends evaluate (an `In`
/// without values matches nothing, a `NotIn` without values everything, an unknown operator
/// nothing: `LabelSelector::matches`); they are translated so that every backend lists the
/// same objects.
pub(crate) fn selector_query(selector: &LabelSelector) -> Option<String> {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for r in &selector.match_expressions {
        let values = r.values.join(",");
        match r.operator.as_str() {
            "In" if r.values.is_empty() => return None,
            "In" => parts.push(format!("{} in ({values})", r.key)),
            "NotIn" if r.values.is_empty() => {}
            "NotIn" => parts.push(format!("{} notin ({values})", r.key)),
            "Exists" => parts.push(r.key.clone()),
            "DoesNotExist" => parts.push(format!("!{}", r.key)),
            _ => return None,
        }
    }
    Some(parts.join(","))
}

/// What the store does, for error contexts and for the meaning of a 404.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Read,
    Create,
    Write,
}

/// A failed request as an `ipam_core::Error`.
///
/// | the API server's answer | error |
/// |---|---|
/// | 409 `AlreadyExists` | `AlreadyExists` |
/// | 409 (a stale `resourceVersion`, a failed delete precondition) | `Conflict` |
/// | 404 on a read or a write | `NotFound` |
/// | 404 on a create (no such namespace, or the CRD is not installed) | `Backend` |
/// | 400, 422 (the schema or validation refused the object) | `Malformed` |
/// | 413, or 500 "etcdserver: request is too large" (an object over etcd's limit) | `Backend`, [`crate::Error::TooLarge`], not retryable |
/// | 429, 500, 502, 503, 504; no answer, a broken connection | `Backend`, unavailable |
/// | anything else (401, 403, a garbled answer) | `Backend` |
pub(crate) fn error(key: &ObjectKey, op: Op, e: kube::Error) -> Error {
    let context = match op {
        Op::Read => format!("read {key}"),
        Op::Create => format!("create {key}"),
        Op::Write => format!("write {key}"),
    };
    match e {
        kube::Error::Api(status) => {
            if status.is_already_exists() {
                return Error::AlreadyExists(key.clone());
            }
            if status.code == 413
                || (status.code == 500 && status.message.contains("request is too large"))
            {
                let too_large = crate::Error::TooLarge {
                    object: key.to_string(),
                    message: status.message.clone(),
                };
                return Error::backend(context, too_large);
            }
            match status.code {
                409 => Error::Conflict(key.clone()),
                404 if op != Op::Create => Error::NotFound(key.clone()),
                400 | 422 => Error::Malformed {
                    kind: key.kind,
                    name: key.name.clone(),
                    reason: status.message.clone(),
                },
                429 | 500 | 502 | 503 | 504 => Error::unavailable(context, status),
                _ => Error::backend(context, status),
            }
        }
        e if is_transport(&e) => Error::unavailable(context, e),
        e => Error::backend(context, e),
    }
}

/// Whether the request failed on its way (connection refused, reset, timed out), not in an
/// answer.
pub(crate) fn is_transport(e: &kube::Error) -> bool {
    matches!(
        e,
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_)
    )
}

fn malformed(key: &ObjectKey, reason: &str) -> Error {
    Error::Malformed {
        kind: key.kind,
        name: key.name.clone(),
        reason: reason.into(),
    }
}

/// The key of a document to write, validated as every backend validates it.
pub(crate) fn key_to_write(kind: Kind, object: &Value) -> Result<ObjectKey, Error> {
    semantics::key_of(kind, object)
}

/// What kube-runtime's watchers need of a typed resource.
pub(crate) trait Watched:
    kube::Resource<DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
}

impl<K> Watched for K where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// One request to the API server within `deadline` (`None` when it did not answer in time).
///
/// A refusal (403) is asked again, with backoff, for up to
/// [`FORBIDDEN_GRACE`](crate::FORBIDDEN_GRACE): an API server that has just started
/// serves requests before its authorizer has read the roles, and refuses them meanwhile. A
/// refusal that lasts is returned as it is.
pub(crate) async fn ask<T, Fut>(
    deadline: std::time::Duration,
    request: impl Fn() -> Fut,
) -> Option<Result<T, kube::Error>>
where
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let started = tokio::time::Instant::now();
    let grace = crate::store::FORBIDDEN_GRACE.min(deadline);
    let mut pause = std::time::Duration::from_millis(100);
    loop {
        match tokio::time::timeout_at(started + deadline, request()).await {
            Ok(Err(kube::Error::Api(status)))
                if status.code == 403 && started.elapsed() + pause < grace =>
            {
                tracing::debug!(message = %status.message, "refused (403); asking again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(1));
            }
            Ok(answer) => return Some(answer),
            Err(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipam_core::LabelSelectorRequirement;

    fn req(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn selectors_become_the_query_the_api_server_reads() {
        let mut sel = LabelSelector::eq([("app", "x"), ("tier", "web")]);
        sel.match_expressions = vec![
            req("zone", "In", &["a", "b"]),
            req("legacy", "NotIn", &["1"]),
            req("team", "Exists", &[]),
            req("old", "DoesNotExist", &[]),
            req("any", "NotIn", &[]),
        ];
        assert_eq!(
            selector_query(&sel).as_deref(),
            Some("app=x,tier=web,zone in (a,b),legacy notin (1),team,!old")
        );
        sel.match_expressions = vec![req("zone", "In", &[])];
        assert_eq!(selector_query(&sel), None, "In nothing matches nothing");
        sel.match_expressions = vec![req("zone", "Near", &["a"])];
        assert_eq!(
            selector_query(&sel),
            None,
            "an unknown operator matches nothing"
        );
    }

    #[test]
    fn a_request_carries_no_server_owned_metadata() {
        let key = ObjectKey::cluster(Kind::SpiderIPPool, "p");
        let object = serde_json::json!({
            "metadata": {
                "name": "p", "namespace": "x", "uid": "u", "resourceVersion": "7",
                "creationTimestamp": "2020-01-01T00:00:00Z", "generation": 3,
                "deletionTimestamp": "2020-01-01T00:00:00Z", "labels": {"a": "b"},
            },
            "spec": {"subnet": "10.0.0.0/24"},
        });
        let body = serde_json::to_value(request(&key, object, Some("9")).unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "apiVersion": "spiderpool.spidernet.io/v2beta1",
                "kind": "SpiderIPPool",
                "metadata": {"name": "p", "resourceVersion": "9", "labels": {"a": "b"}},
                "spec": {"subnet": "10.0.0.0/24"},
            })
        );
    }
}
