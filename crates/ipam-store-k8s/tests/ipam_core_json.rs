//! `ipam_core`'s object model and these CRDs speak the same JSON: what Spiderpool writes reads
//! the same through both, and what Berth's engine writes fits the CRDs whole (its two fields of
//! its own, `status.lastAllocatedIP` of a pool and `status.current.containerID` of an endpoint,
//! are optional fields of Berth's CRDs, not of Spiderpool's).

use std::collections::BTreeMap;

use ipam_core::engine::AnyObject;
use ipam_core::store::{MemStore, Store};
use ipam_core::{
    AllocateRequest, AppRef, Engine, Kind, NicRequest, PodContext, SpiderEndpoint, SpiderIPPool,
    SpiderReservedIP, SpiderSubnet, Workload, ips,
};
use ipam_store_k8s::{crds, v2beta1};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// The openAPIV3Schema of `kind`'s CRD.
fn schema(kind: Kind) -> Value {
    let crd = crds::all()
        .into_iter()
        .find(|c| c.spec.names.kind == kind.name())
        .unwrap();
    serde_json::to_value(
        &crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema,
    )
    .unwrap()
}

/// What the API server would refuse or drop of `value` under `schema`, as `path: why`.
fn violations(path: &str, value: &Value, schema: &Value, out: &mut Vec<String>) {
    let ty = schema["type"].as_str().unwrap_or_default();
    let fits = match ty {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64(),
        "boolean" => value.is_boolean(),
        other => panic!("{path}: type {other:?} not handled"),
    };
    if !fits {
        out.push(format!("{path}: a {ty} is expected, not {value}"));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        out.push(format!("{path}: {value} is none of {allowed:?}"));
    }
    if let (Some(min), Some(n)) = (schema["minimum"].as_f64(), value.as_f64())
        && n < min
    {
        out.push(format!("{path}: {n} is below {min}"));
    }
    if let (Some(max), Some(n)) = (schema["maximum"].as_f64(), value.as_f64())
        && n > max
    {
        out.push(format!("{path}: {n} is above {max}"));
    }
    match value {
        Value::Object(fields) => {
            for required in schema["required"].as_array().into_iter().flatten() {
                if !fields.contains_key(required.as_str().unwrap()) {
                    out.push(format!("{path}.{}: required, missing", required));
                }
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            let values = schema.get("additionalProperties");
            if properties.is_none() && values.is_none() {
                return; // metadata: the API server's own
            }
            for (name, field) in fields {
                let at = format!("{path}.{name}");
                match (properties.and_then(|p| p.get(name)), values) {
                    (Some(s), _) | (None, Some(s)) => violations(&at, field, s, out),
                    (None, None) => out.push(format!("{at}: not in the schema (dropped)")),
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                violations(&format!("{path}[{i}]"), item, &schema["items"], out);
            }
        }
        _ => {}
    }
}

/// The JSON documents in strings (`allocatedIPs`, `controlledIPPools`) parsed, so that two
/// writers' key order and spacing do not count.
fn with_documents_parsed(mut object: Value) -> Value {
    for field in ["/status/allocatedIPs", "/status/controlledIPPools"] {
        if let Some(text) = object.pointer(field).and_then(Value::as_str) {
            let parsed: Value = serde_json::from_str(text).unwrap();
            *object.pointer_mut(field).unwrap() = parsed;
        }
    }
    object
}

/// `json` read as `T` and written again.
fn through<T: Serialize + DeserializeOwned>(json: &Value) -> Value {
    let object: T = serde_json::from_value(json.clone())
        .unwrap_or_else(|e| panic!("{}: {e}", std::any::type_name::<T>()));
    serde_json::to_value(object).unwrap()
}

/// Objects as Spiderpool's agent and controller write them (Go's encoding/json of the v2beta1
/// types: `omitempty` fields left out; IP lists merged and sorted by its webhook), every field
/// set once.
fn spiderpool_objects() -> [(Kind, Value); 4] {
    let allocated = json!({
        "10.6.168.171": {"pod": "default/test-app-6f4594ff67-fkqbw", "podUid": "5bd2-01"},
        "10.6.168.9": {"pod": "default/web-0", "podUid": "5bd2-02"},
    });
    let controlled = json!({
        "auto4-test-app-eth0-b1a36": {
            "ips": ["10.6.168.171-10.6.168.173"],
            "application": "apps_v1_Deployment_default_test-app",
        },
        "manual": {"ips": ["10.6.168.180"]},
    });
    [
        (
            Kind::SpiderSubnet,
            json!({
                "apiVersion": "spiderpool.spidernet.io/v2beta1",
                "kind": "SpiderSubnet",
                "metadata": {
                    "name": "subnet-test-ens192",
                    "labels": {"ipam.spidernet.io/subnet-cidr": "10-6-0-0-16"},
                    "finalizers": ["spiderpool.spidernet.io"],
                    "resourceVersion": "1234", "uid": "a1", "generation": 1,
                    "creationTimestamp": "2026-07-08T12:00:00Z",
                },
                "spec": {
                    "ipVersion": 4,
                    "subnet": "10.6.0.0/16",
                    "ips": ["10.6.168.9", "10.6.168.171-10.6.168.180"],
                    "excludeIPs": ["10.6.168.175"],
                    "gateway": "10.6.0.1",
                    "routes": [{"dst": "10.96.0.0/12", "gw": "10.6.0.2"}],
                },
                "status": {
                    "controlledIPPools": controlled.to_string(),
                    "totalIPCount": 10,
                    "allocatedIPCount": 4,
                },
            }),
        ),
        (
            Kind::SpiderIPPool,
            json!({
                "apiVersion": "spiderpool.spidernet.io/v2beta1",
                "kind": "SpiderIPPool",
                "metadata": {
                    "name": "auto4-test-app-eth0-b1a36",
                    "labels": {
                        "ipam.spidernet.io/ippool-cidr": "10-6-0-0-16",
                        "ipam.spidernet.io/owner-spider-subnet": "subnet-test-ens192",
                    },
                    "finalizers": ["spiderpool.spidernet.io"],
                },
                "spec": {
                    "ipVersion": 4,
                    "subnet": "10.6.0.0/16",
                    "ips": ["10.6.168.9", "10.6.168.171-10.6.168.173"],
                    "excludeIPs": ["10.6.168.172"],
                    "gateway": "10.6.0.1",
                    "routes": [],
                    "podAffinity": {
                        "matchLabels": {"ipam.spidernet.io/app-namespace": "default"},
                        "matchExpressions": [
                            {"key": "tier", "operator": "In", "values": ["web", "api"]},
                            {"key": "legacy", "operator": "DoesNotExist"},
                        ],
                    },
                    "namespaceAffinity": {"matchLabels": {"team": "a"}},
                    "namespaceName": ["default"],
                    "nodeAffinity": {"matchLabels": {"zone": "z1"}},
                    "nodeName": ["node1", "node2"],
                    "multusName": ["kube-system/macvlan-conf-ens192"],
                    "default": false,
                    "disable": false,
                },
                "status": {
                    "allocatedIPs": allocated.to_string(),
                    "totalIPCount": 3,
                    "allocatedIPCount": 2,
                },
            }),
        ),
        (
            Kind::SpiderEndpoint,
            json!({
                "apiVersion": "spiderpool.spidernet.io/v2beta1",
                "kind": "SpiderEndpoint",
                "metadata": {
                    "name": "web-0", "namespace": "default",
                    "finalizers": ["spiderpool.spidernet.io"],
                },
                "status": {
                    "current": {
                        "uid": "5bd2-02",
                        "node": "node1",
                        "ips": [
                            {
                                "interface": "eth0",
                                "ipv4": "10.6.168.9/16",
                                "ipv6": "fd00:6::9/64",
                                "ipv4Pool": "auto4-test-app-eth0-b1a36",
                                "ipv6Pool": "v6-pool",
                                "vlan": 0,
                                "ipv4Gateway": "10.6.0.1",
                                "ipv6Gateway": "fd00:6::1",
                                "cleanGateway": false,
                                "routes": [{"dst": "10.96.0.0/12", "gw": "10.6.0.2"}],
                                "mac": "aa:bb:cc:dd:ee:ff",
                            },
                            {"interface": "net1", "ipv4": "10.7.168.9/16", "ipv4Pool": "p7", "vlan": 0},
                        ],
                    },
                    "ownerControllerType": "StatefulSet",
                    "ownerControllerName": "web",
                },
            }),
        ),
        (
            Kind::SpiderReservedIP,
            json!({
                "apiVersion": "spiderpool.spidernet.io/v2beta1",
                "kind": "SpiderReservedIP",
                "metadata": {"name": "reserved"},
                "spec": {"ipVersion": 4, "ips": ["10.6.168.176-10.6.168.177", "10.6.168.200"]},
            }),
        ),
    ]
}

/// Reads `json` through `kind`'s type in `ipam_core` and in [`v2beta1`]; both write it back.
fn both_models(kind: Kind, json: &Value) -> (Value, Value) {
    match kind {
        Kind::SpiderSubnet => (
            through::<SpiderSubnet>(json),
            through::<v2beta1::SpiderSubnet>(json),
        ),
        Kind::SpiderIPPool => (
            through::<SpiderIPPool>(json),
            through::<v2beta1::SpiderIPPool>(json),
        ),
        Kind::SpiderEndpoint => (
            through::<SpiderEndpoint>(json),
            through::<v2beta1::SpiderEndpoint>(json),
        ),
        Kind::SpiderReservedIP => (
            through::<SpiderReservedIP>(json),
            through::<v2beta1::SpiderReservedIP>(json),
        ),
        other => panic!("{other} has no CRD here"),
    }
}

#[test]
fn what_spiderpool_writes_reads_and_writes_back_the_same_through_both_models() {
    for (kind, json) in spiderpool_objects() {
        let mut problems = Vec::new();
        violations("", &json, &schema(kind), &mut problems);
        assert_eq!(problems, Vec::<String>::new(), "{kind}: the sample itself");
        let (core, wire) = both_models(kind, &json);
        assert_eq!(wire, json, "{kind} through v2beta1");
        assert_eq!(
            with_documents_parsed(core),
            with_documents_parsed(json.clone()),
            "{kind} through ipam_core"
        );
    }
}

#[test]
fn spiderpools_allocations_are_what_ipam_core_reads() {
    let [_, (_, pool), ..] = spiderpool_objects();
    let core: SpiderIPPool = serde_json::from_value(pool.clone()).unwrap();
    let wire: v2beta1::SpiderIPPool = serde_json::from_value(pool).unwrap();
    let theirs: BTreeMap<String, (String, String)> = wire
        .status
        .unwrap()
        .allocations()
        .unwrap()
        .into_iter()
        .map(|(ip, a)| (ip, (a.pod, a.pod_uid)))
        .collect();
    let ours: BTreeMap<String, (String, String)> = core
        .records()
        .into_iter()
        .map(|(ip, r)| (ip.to_string(), (r.pod, r.pod_uid)))
        .collect();
    assert_eq!(ours, theirs);
    assert_eq!(core.allocated_ips(), ips!["10.6.168.9", "10.6.168.171"]);
}

/// The seed: its two subnets and its Deployment (two pods, two NICs each), a manual pool and a
/// reservation, through Berth's engine on the in-memory store.
async fn seed_state() -> Engine<MemStore> {
    let engine = Engine::new(MemStore::new());
    let seed = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/seed/");
    let mut app = None;
    for file in ["subnets.yaml", "deployment.yaml"] {
        let text = std::fs::read_to_string(format!("{seed}{file}")).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(doc).unwrap();
            let object = AnyObject::from_value(value).unwrap();
            if let AnyObject::Deployment(d) = &object {
                app = Some(d.0.clone());
            }
            engine.apply(object).await.unwrap();
        }
    }
    let app: Workload = app.unwrap();
    let manual = SpiderIPPool::new(
        "manual",
        "10.7.0.0/16".parse().unwrap(),
        ips!["10.7.168.180"],
    );
    engine.apply(manual).await.unwrap();
    let reserved = SpiderReservedIP::new("reserved", ips!["10.6.168.180"]);
    engine.apply(reserved).await.unwrap();
    for (pod, uid) in [("test-app-1", "uid-1"), ("test-app-2", "uid-2")] {
        let request = AllocateRequest {
            pod: PodContext {
                namespace: "default".into(),
                name: pod.into(),
                annotations: app.pod_annotations().clone(),
                app: Some(AppRef::of(&app)),
                node: "node1".into(),
                ..Default::default()
            },
            pod_uid: uid.into(),
            container_id: format!("c-{pod}"),
            netns: Some(format!("/var/run/netns/{pod}")),
            nics: ["eth0", "net1"]
                .map(|nic| NicRequest {
                    interface: nic.into(),
                    network: Some(format!("macvlan-{nic}")),
                    ..Default::default()
                })
                .into(),
        };
        engine.allocate(&request).await.unwrap();
    }
    engine
}

#[tokio::test]
async fn what_berths_engine_writes_fits_the_crds() {
    let engine = seed_state().await;
    let mut problems = Vec::new();
    let mut counts = BTreeMap::new();
    for kind in [
        Kind::SpiderSubnet,
        Kind::SpiderIPPool,
        Kind::SpiderEndpoint,
        Kind::SpiderReservedIP,
    ] {
        let objects = engine.store().list(kind, None, None).await.unwrap();
        counts.insert(kind.name(), objects.len());
        for object in objects {
            let mut found = Vec::new();
            violations("", &object, &schema(kind), &mut found);
            problems.extend(found.into_iter().map(|p| format!("{kind} {p}")));
            // Spiderpool's types read it (its Go types are what v2beta1 mirrors).
            both_models(kind, &object);
        }
    }
    assert_eq!(
        counts,
        BTreeMap::from([
            ("SpiderEndpoint", 2),
            ("SpiderIPPool", 3),
            ("SpiderReservedIP", 1),
            ("SpiderSubnet", 2),
        ])
    );
    problems.sort();
    problems.dedup();
    // Nothing is dropped: the API server keeps every field the engine writes.
    assert_eq!(problems, Vec::<String>::new());
    // Berth's own fields are there to be kept (the seed allocated, so both are written).
    let pools = engine
        .store()
        .list(Kind::SpiderIPPool, None, None)
        .await
        .unwrap();
    assert!(
        pools
            .iter()
            .any(|p| p["status"]["lastAllocatedIP"].is_string())
    );
    let endpoints = engine
        .store()
        .list(Kind::SpiderEndpoint, None, None)
        .await
        .unwrap();
    assert!(
        endpoints
            .iter()
            .all(|e| e["status"]["current"]["containerID"].is_string())
    );
}

#[tokio::test]
async fn spiderpool_reads_the_holders_berth_writes() {
    let engine = seed_state().await;
    let pools = engine
        .store()
        .list(Kind::SpiderIPPool, None, None)
        .await
        .unwrap();
    let mut holders = Vec::new();
    for pool in pools {
        let wire: v2beta1::SpiderIPPool = serde_json::from_value(pool).unwrap();
        let status = wire.status.unwrap_or_default();
        let allocations = status.allocations().unwrap();
        assert_eq!(
            status.allocated_ip_count,
            Some(allocations.len() as i64),
            "{:?}",
            wire.metadata.name
        );
        for (ip, holder) in allocations {
            holders.push(format!("{ip} {} {}", holder.pod, holder.pod_uid));
        }
    }
    holders.sort();
    assert_eq!(
        holders,
        [
            "10.6.168.171 default/test-app-1 uid-1",
            "10.6.168.172 default/test-app-2 uid-2",
            "10.7.168.171 default/test-app-1 uid-1",
            "10.7.168.172 default/test-app-2 uid-2",
        ]
    );
}
