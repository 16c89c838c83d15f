//! Berth's CRDs are Spiderpool v1.2's API: every field, type and printer column, checked against
//! a listing of Spiderpool's CRDs.
//!
//! `SPIDERPOOL` below is the API of `charts/spiderpool/crds/spiderpool.spidernet.io_*.yaml` of
//! Spiderpool v1.2.2 (the same files from v1.2.0 to its main branch of 2026-07), flattened:
//! one line per schema node (its path, type, format, enum, default, bounds, required fields and
//! merge markers; descriptions left out), one per printer column, and the names, scope and
//! subresources. It was made from those files with the flattening below and compared with the
//! Go types of `pkg/k8s/apis/spiderpool.spidernet.io/v2beta1`; it changes only when Spiderpool's
//! API does. The differences Berth keeps on purpose are listed below it: one printer column, and
//! two optional status fields of Berth's own that Spiderpool's API does not have.

use ipam_store_k8s::crds;
use serde_json::Value;

/// One line per schema node under `path`.
fn flatten(path: &str, schema: &Value, out: &mut Vec<String>) {
    let mut line = format!("{path}: {}", schema["type"].as_str().unwrap_or("?"));
    for (key, label) in [
        ("format", "format"),
        ("enum", "enum"),
        ("default", "default"),
        ("minimum", "min"),
        ("maximum", "max"),
        ("required", "required"),
        ("x-kubernetes-map-type", "map-type"),
        ("x-kubernetes-list-type", "list-type"),
        ("x-kubernetes-preserve-unknown-fields", "preserve-unknown"),
        ("x-kubernetes-int-or-string", "int-or-string"),
    ] {
        if let Some(v) = schema.get(key) {
            // Bounds are f64 in k8s-openapi: 0.0 is Spiderpool's 0.
            let v = match v.as_f64() {
                Some(f) if v.is_f64() && f.fract() == 0.0 => Value::from(f as i64),
                _ => v.clone(),
            };
            line.push_str(&format!(" {label}={v}"));
        }
    }
    let known = [
        "type",
        "format",
        "enum",
        "default",
        "minimum",
        "maximum",
        "required",
        "x-kubernetes-map-type",
        "x-kubernetes-list-type",
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-int-or-string",
        "description",
        "properties",
        "items",
        "additionalProperties",
    ];
    for key in schema.as_object().unwrap().keys() {
        assert!(
            known.contains(&key.as_str()),
            "{path}: unlisted keyword {key}"
        );
    }
    out.push(line);
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            let child = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            flatten(&child, property, out);
        }
    }
    if let Some(items) = schema.get("items") {
        flatten(&format!("{path}[]"), items, out);
    }
    if let Some(values) = schema.get("additionalProperties") {
        flatten(&format!("{path}{{}}"), values, out);
    }
}

/// The API of one CRD, as the lines of `SPIDERPOOL`.
fn listing(crd: &Value) -> Vec<String> {
    let spec = &crd["spec"];
    let names = &spec["names"];
    let version = &spec["versions"][0];
    let mut out = vec![format!(
        "{} kind={} list={} plural={} singular={} short={} categories={} scope={} version={} served={} storage={} subresources={}",
        crd["metadata"]["name"].as_str().unwrap(),
        names["kind"].as_str().unwrap(),
        names["listKind"].as_str().unwrap(),
        names["plural"].as_str().unwrap(),
        names["singular"].as_str().unwrap(),
        names["shortNames"],
        names["categories"],
        spec["scope"].as_str().unwrap(),
        version["name"].as_str().unwrap(),
        version["served"],
        version["storage"],
        version["subresources"],
    )];
    for column in version["additionalPrinterColumns"].as_array().unwrap() {
        out.push(format!(
            "column {} {} {} priority={}",
            column["name"].as_str().unwrap(),
            column["type"].as_str().unwrap(),
            column["jsonPath"].as_str().unwrap(),
            column.get("priority").unwrap_or(&Value::from(0)),
        ));
    }
    flatten("", &version["schema"]["openAPIV3Schema"], &mut out);
    out
}

/// Where Berth's CRDs differ from Spiderpool's on purpose: (Spiderpool's line, Berth's, why).
const BERTH_DIFFERS: [(&str, &str, &str); 1] = [(
    "column DISABLE boolean .spec.disable priority=10",
    "column DISABLE boolean .spec.disable priority=0",
    "`kubectl get sp` shows DISABLE as in the seed walkthrough (Spiderpool before v0.7 did too)",
)];

/// What Berth's CRDs have and Spiderpool's do not: (the line of Spiderpool's it follows,
/// Berth's line, why). Optional fields only, so Spiderpool's objects stay valid and the same.
const BERTH_ADDS: [(&str, &str, &str); 3] = [
    (
        "spec.subnet: string",
        r#"spec.vlan: integer format="int64" min=0 max=4094"#,
        "deprecated, accepted and dropped: the seed's YAML sets `vlan: 0` and kubectl refuses unknown fields",
    ),
    (
        r#"status.current: object required=["ips","node","uid"]"#,
        "status.current.containerID: string",
        "the CNI container id the endpoint's IPs were given to: how a retried ADD finds them",
    ),
    (
        "status.allocatedIPs: string",
        "status.lastAllocatedIP: string",
        "where round-robin allocation resumes, written with the records in one status write",
    ),
];

#[test]
fn the_crds_are_spiderpools_api() {
    let expected: Vec<Vec<String>> = SPIDERPOOL
        .split("\n\n")
        .map(|block| {
            let mut lines = Vec::new();
            for line in block.lines() {
                lines.push(
                    BERTH_DIFFERS
                        .iter()
                        .find(|(theirs, _, _)| *theirs == line)
                        .map_or(line, |(_, berth, _)| berth)
                        .to_owned(),
                );
                lines.extend(
                    BERTH_ADDS
                        .iter()
                        .filter(|(after, _, _)| *after == line)
                        .map(|(_, berth, _)| berth.to_string()),
                );
            }
            lines
        })
        .collect();
    let crds = crds::all();
    assert_eq!(crds.len(), expected.len(), "one CRD per kind");
    for (crd, expected) in crds.iter().zip(expected) {
        let ours = listing(&serde_json::to_value(crd).unwrap());
        let kind = &crd.spec.names.kind;
        let missing: Vec<&String> = expected.iter().filter(|l| !ours.contains(l)).collect();
        let extra: Vec<&String> = ours.iter().filter(|l| !expected.contains(l)).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{kind} is not Spiderpool v1.2's API.\nSpiderpool's, not Berth's: {missing:#?}\nBerth's, not Spiderpool's: {extra:#?}"
        );
        assert_eq!(ours, expected, "{kind}: the same lines in another order");
    }
}

/// Spiderpool v1.2.2's CRDs, flattened by [`listing`] (see the file's doc).
const SPIDERPOOL: &str = r#"spiderendpoints.spiderpool.spidernet.io kind=SpiderEndpoint list=SpiderEndpointList plural=spiderendpoints singular=spiderendpoint short=["se"] categories=["spiderpool"] scope=Namespaced version=v2beta1 served=true storage=true subresources={}
column INTERFACE string .status.current.ips[0].interface priority=0
column IPV4POOL string .status.current.ips[0].ipv4Pool priority=0
column IPV4 string .status.current.ips[0].ipv4 priority=0
column IPV6POOL string .status.current.ips[0].ipv6Pool priority=0
column IPV6 string .status.current.ips[0].ipv6 priority=0
column NODE string .status.current.node priority=0
: object
apiVersion: string
kind: string
metadata: object
status: object required=["current","ownerControllerName","ownerControllerType"]
status.current: object required=["ips","node","uid"]
status.current.ips: array
status.current.ips[]: object required=["interface"]
status.current.ips[].cleanGateway: boolean
status.current.ips[].interface: string
status.current.ips[].ipv4: string
status.current.ips[].ipv4Gateway: string
status.current.ips[].ipv4Pool: string
status.current.ips[].ipv6: string
status.current.ips[].ipv6Gateway: string
status.current.ips[].ipv6Pool: string
status.current.ips[].mac: string
status.current.ips[].routes: array
status.current.ips[].routes[]: object required=["dst","gw"]
status.current.ips[].routes[].dst: string
status.current.ips[].routes[].gw: string
status.current.ips[].vlan: integer format="int64" default=0 min=0 max=4094
status.current.node: string
status.current.uid: string
status.ownerControllerName: string
status.ownerControllerType: string

spiderippools.spiderpool.spidernet.io kind=SpiderIPPool list=SpiderIPPoolList plural=spiderippools singular=spiderippool short=["sp"] categories=["spiderpool"] scope=Cluster version=v2beta1 served=true storage=true subresources={"status":{}}
column VERSION string .spec.ipVersion priority=0
column SUBNET string .spec.subnet priority=0
column ALLOCATED-IP-COUNT integer .status.allocatedIPCount priority=0
column TOTAL-IP-COUNT integer .status.totalIPCount priority=0
column DEFAULT boolean .spec.default priority=0
column DISABLE boolean .spec.disable priority=10
column NodeName string .spec.nodeName priority=10
column MultusName string .spec.multusName priority=10
column APP-NAMESPACE string .spec.podAffinity.matchLabels['ipam\.spidernet\.io/app\-namespace'] priority=10
: object
apiVersion: string
kind: string
metadata: object
spec: object required=["subnet"]
spec.default: boolean default=false
spec.disable: boolean default=false
spec.excludeIPs: array
spec.excludeIPs[]: string
spec.gateway: string
spec.ipVersion: integer format="int64" enum=[4,6]
spec.ips: array
spec.ips[]: string
spec.multusName: array
spec.multusName[]: string
spec.namespaceAffinity: object map-type="atomic"
spec.namespaceAffinity.matchExpressions: array list-type="atomic"
spec.namespaceAffinity.matchExpressions[]: object required=["key","operator"]
spec.namespaceAffinity.matchExpressions[].key: string
spec.namespaceAffinity.matchExpressions[].operator: string
spec.namespaceAffinity.matchExpressions[].values: array list-type="atomic"
spec.namespaceAffinity.matchExpressions[].values[]: string
spec.namespaceAffinity.matchLabels: object
spec.namespaceAffinity.matchLabels{}: string
spec.namespaceName: array
spec.namespaceName[]: string
spec.nodeAffinity: object map-type="atomic"
spec.nodeAffinity.matchExpressions: array list-type="atomic"
spec.nodeAffinity.matchExpressions[]: object required=["key","operator"]
spec.nodeAffinity.matchExpressions[].key: string
spec.nodeAffinity.matchExpressions[].operator: string
spec.nodeAffinity.matchExpressions[].values: array list-type="atomic"
spec.nodeAffinity.matchExpressions[].values[]: string
spec.nodeAffinity.matchLabels: object
spec.nodeAffinity.matchLabels{}: string
spec.nodeName: array
spec.nodeName[]: string
spec.podAffinity: object map-type="atomic"
spec.podAffinity.matchExpressions: array list-type="atomic"
spec.podAffinity.matchExpressions[]: object required=["key","operator"]
spec.podAffinity.matchExpressions[].key: string
spec.podAffinity.matchExpressions[].operator: string
spec.podAffinity.matchExpressions[].values: array list-type="atomic"
spec.podAffinity.matchExpressions[].values[]: string
spec.podAffinity.matchLabels: object
spec.podAffinity.matchLabels{}: string
spec.routes: array
spec.routes[]: object required=["dst","gw"]
spec.routes[].dst: string
spec.routes[].gw: string
spec.subnet: string
status: object
status.allocatedIPCount: integer format="int64" min=0
status.allocatedIPs: string
status.totalIPCount: integer format="int64" min=0

spiderreservedips.spiderpool.spidernet.io kind=SpiderReservedIP list=SpiderReservedIPList plural=spiderreservedips singular=spiderreservedip short=["sr"] categories=["spiderpool"] scope=Cluster version=v2beta1 served=true storage=true subresources={}
column VERSION string .spec.ipVersion priority=0
: object
apiVersion: string
kind: string
metadata: object
spec: object
spec.ipVersion: integer format="int64" enum=[4,6]
spec.ips: array
spec.ips[]: string

spidersubnets.spiderpool.spidernet.io kind=SpiderSubnet list=SpiderSubnetList plural=spidersubnets singular=spidersubnet short=["ss"] categories=["spiderpool"] scope=Cluster version=v2beta1 served=true storage=true subresources={"status":{}}
column VERSION string .spec.ipVersion priority=0
column SUBNET string .spec.subnet priority=0
column ALLOCATED-IP-COUNT integer .status.allocatedIPCount priority=0
column TOTAL-IP-COUNT integer .status.totalIPCount priority=0
: object
apiVersion: string
kind: string
metadata: object
spec: object required=["subnet"]
spec.excludeIPs: array
spec.excludeIPs[]: string
spec.gateway: string
spec.ipVersion: integer format="int64" enum=[4,6]
spec.ips: array
spec.ips[]: string
spec.routes: array
spec.routes[]: object required=["dst","gw"]
spec.routes[].dst: string
spec.routes[].gw: string
spec.subnet: string
status: object
status.allocatedIPCount: integer format="int64" min=0
status.controlledIPPools: string
status.totalIPCount: integer format="int64" min=0"#;
