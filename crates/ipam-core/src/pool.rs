//! `SpiderIPPool`: the IPs pods get, and who holds each of them.
//!
//! `status.allocatedIPs` is the authority on ownership: an IP is taken when its record is in
//! the pool's status, whatever any endpoint says. Every change of a record is a single write of
//! the pool with its version as precondition, so two writers can never both take one IP.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::addressing::{Addressing, JsonString, check_name, cidr_label, family_of, usable_ips};
use crate::allocator::Allocator;
use crate::error::{Error, Problem};
use crate::meta::{
    Kind, LabelSelector, ObjectMeta, cidr_spec, spiderpool_api_version, spiderpool_kind,
};
use crate::range::{IpFamily, IpSet};
use crate::subnet::{SpiderSubnet, clamp_count, immutable};
use crate::{
    AppKind, AppRef, FINALIZER, LABEL_IPPOOL_CIDR, LABEL_OWNER_APP_GV, LABEL_OWNER_APP_KIND,
    LABEL_OWNER_APP_NAME, LABEL_OWNER_APP_NAMESPACE, LABEL_OWNER_APP_UID, LABEL_OWNER_SUBNET,
};

spiderpool_kind! {
    /// A `SpiderIPPool` (`spiderpool.spidernet.io/v2beta1`, cluster-scoped).
    pub struct SpiderIPPool (kind default "SpiderIPPool::kind_name") {
        /// Spec.
        pub spec: PoolSpec,
        /// Status, written by the engine.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub status: Option<PoolStatus>,
    }
}

cidr_spec! {
    /// `SpiderIPPool.spec`.
    pub struct PoolSpec {
        /// Only pods matching this selector (auto pools: only their application).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub pod_affinity: Option<LabelSelector>,
        /// Only pods in namespaces matching this selector.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub namespace_affinity: Option<LabelSelector>,
        /// Only pods in these namespaces (takes precedence over `namespaceAffinity`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub namespace_name: Vec<String>,
        /// Only pods on nodes matching this selector.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub node_affinity: Option<LabelSelector>,
        /// Only pods on these nodes (takes precedence over `nodeAffinity`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub node_name: Vec<String>,
        /// Only NICs attached through these NetworkAttachmentDefinitions (`ns/name`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub multus_name: Vec<String>,
        /// A cluster default pool, used when nothing else selects a pool.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub default: Option<bool>,
        /// No new allocations (release still works).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub disable: Option<bool>,
        /// Removed from Spiderpool in 2025; accepted and dropped.
        #[serde(default, skip_serializing)]
        pub vlan: Option<serde_json::Value>,
    }
}

/// `SpiderIPPool.status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolStatus {
    /// IP → holder (a JSON document in a string, as Spiderpool stores it; absent when empty).
    #[serde(
        default,
        rename = "allocatedIPs",
        skip_serializing_if = "Option::is_none"
    )]
    pub allocated_ips: Option<JsonString<BTreeMap<IpAddr, IpRecord>>>,
    /// Number of IPs held by pods.
    #[serde(
        default,
        rename = "allocatedIPCount",
        skip_serializing_if = "Option::is_none"
    )]
    pub allocated_ip_count: Option<i64>,
    /// Number of IPs of the pool (ips minus excludeIPs).
    #[serde(
        default,
        rename = "totalIPCount",
        skip_serializing_if = "Option::is_none"
    )]
    pub total_ip_count: Option<i64>,
    /// The last IP handed out: round robin resumes after it (Berth's own field).
    #[serde(
        default,
        rename = "lastAllocatedIP",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_allocated_ip: Option<IpAddr>,
}

/// Who holds one IP of a pool. Spiderpool writes `pod` and `podUid`; Berth adds what it needs
/// to be idempotent per container and NIC and to decide liveness without a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpRecord {
    /// `namespace/name` of the pod.
    pub pod: String,
    /// UID of the pod.
    #[serde(default)]
    pub pod_uid: String,
    /// The CNI container (sandbox) id.
    #[serde(
        default,
        rename = "containerID",
        skip_serializing_if = "Option::is_none"
    )]
    pub container_id: Option<String>,
    /// The pod interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// The CNI network name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// The CNI netns path of the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
}

impl SpiderIPPool {
    /// A pool with just the fields a user writes.
    pub fn new(name: &str, subnet: IpNet, ips: IpSet) -> Self {
        SpiderIPPool {
            api_version: spiderpool_api_version(),
            kind: Self::kind_name(),
            metadata: ObjectMeta::named(name),
            spec: PoolSpec {
                ip_version: None,
                subnet,
                ips,
                exclude_ips: IpSet::new(),
                gateway: None,
                routes: None,
                pod_affinity: None,
                namespace_affinity: None,
                namespace_name: Vec::new(),
                node_affinity: None,
                node_name: Vec::new(),
                multus_name: Vec::new(),
                default: None,
                disable: None,
                vlan: None,
            },
            status: None,
        }
    }

    /// The network (host bits cleared).
    pub fn cidr(&self) -> IpNet {
        self.spec.subnet.trunc()
    }

    /// The IP version.
    pub fn family(&self) -> IpFamily {
        family_of(&self.spec.subnet)
    }

    /// The pool's IPs: `ips` minus `excludeIPs` (and network/broadcast for IPv4).
    pub fn usable_ips(&self) -> IpSet {
        usable_ips(&self.spec.subnet, &self.spec.ips, &self.spec.exclude_ips)
    }

    /// Whether this is an auto pool (created for an application from a subnet).
    pub fn is_auto(&self) -> bool {
        self.metadata.labels.contains_key(LABEL_OWNER_APP_UID)
    }

    /// The `podAffinity` an auto-created pool must have: its application's five
    /// `ipam.spidernet.io/app-*` labels, from the pool's owner-application labels. `None` for a
    /// pool not created for an application.
    pub fn app_affinity(&self) -> Option<LabelSelector> {
        if !self.is_auto() {
            return None;
        }
        let label = |k: &str| self.metadata.label(k).unwrap_or_default().to_string();
        let (group, version) = AppRef::parse_gv_label(&label(LABEL_OWNER_APP_GV));
        Some(crate::autopool::app_affinity(&AppRef {
            group,
            version,
            kind: AppKind::from(label(LABEL_OWNER_APP_KIND).as_str()),
            namespace: label(LABEL_OWNER_APP_NAMESPACE),
            name: label(LABEL_OWNER_APP_NAME),
        }))
    }

    /// Whether new allocations are refused (disabled or terminating).
    pub fn is_closed(&self) -> bool {
        self.spec.disable == Some(true) || self.metadata.is_terminating()
    }

    /// The holders of the pool's IPs.
    pub fn records(&self) -> BTreeMap<IpAddr, IpRecord> {
        self.status
            .as_ref()
            .and_then(|s| s.allocated_ips.as_ref())
            .map(|a| a.0.clone())
            .unwrap_or_default()
    }

    /// The holders of the pool's IPs, borrowed, in address order.
    pub fn iter_records(&self) -> impl Iterator<Item = (&IpAddr, &IpRecord)> {
        self.status
            .as_ref()
            .and_then(|s| s.allocated_ips.as_ref())
            .into_iter()
            .flat_map(|a| a.0.iter())
    }

    /// The IPs held by pods.
    pub fn allocated_ips(&self) -> IpSet {
        self.status
            .as_ref()
            .and_then(|s| s.allocated_ips.as_ref())
            .map(|a| a.0.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Number of IPs held by pods, from the records themselves.
    pub fn allocated_count(&self) -> usize {
        self.status
            .as_ref()
            .and_then(|s| s.allocated_ips.as_ref())
            .map_or(0, |a| a.0.len())
    }

    /// Replaces the records and recomputes the counts, so they can never drift.
    pub fn set_records(&mut self, records: BTreeMap<IpAddr, IpRecord>) {
        let total = clamp_count(self.usable_ips().len());
        let status = self.status.get_or_insert_with(Default::default);
        status.allocated_ip_count = Some(records.len() as i64);
        status.total_ip_count = Some(total);
        status.allocated_ips = (!records.is_empty()).then_some(JsonString(records));
    }

    /// The allocator state of this pool, with `reserved` IPs never handed out.
    pub fn allocator(&self, reserved: &IpSet) -> Allocator {
        let allocatable = self.usable_ips().difference(reserved);
        Allocator::restore(
            allocatable,
            self.iter_records().map(|(ip, _)| ip),
            self.status.as_ref().and_then(|s| s.last_allocated_ip),
        )
    }

    /// Spiderpool's mutating webhook: derive `ipVersion`, set the CIDR label and finalizer, and
    /// bind the pool to the subnet of the same CIDR (label, gateway and routes inherited).
    pub fn mutate(&mut self, subnets: &[SpiderSubnet]) {
        if self.spec.ip_version.is_none() {
            self.spec.ip_version = Some(self.family().version());
        }
        self.spec.vlan = None;
        self.metadata
            .labels
            .insert(LABEL_IPPOOL_CIDR.into(), cidr_label(&self.spec.subnet));
        // Not on a terminating object: removing the finalizer is how it goes (Spiderpool's
        // webhook leaves terminating objects alone too).
        if !self.metadata.is_terminating()
            && !self.metadata.finalizers.iter().any(|f| f == FINALIZER)
        {
            self.metadata.finalizers.push(FINALIZER.into());
        }
        if let Some(subnet) = owning_subnet(&self.spec.subnet, subnets) {
            self.metadata
                .labels
                .insert(LABEL_OWNER_SUBNET.into(), subnet.metadata.name.clone());
            if self.spec.gateway.is_none() {
                self.spec.gateway = subnet.spec.gateway;
            }
            if self.spec.routes.is_none() {
                self.spec.routes = subnet.spec.routes.clone();
            }
        }
        let records = self.records();
        self.set_records(records);
    }

    /// Spiderpool's validating webhook: the pool against its stored version (`old`), the other
    /// pools and the subnets.
    pub fn validate(
        &self,
        old: Option<&SpiderIPPool>,
        pools: &[SpiderIPPool],
        subnets: &[SpiderSubnet],
    ) -> Result<(), Error> {
        let name = self.metadata.name.as_str();
        let fail = |p: Problem| Error::invalid(Kind::SpiderIPPool, name, p);
        check_name(name).map_err(fail)?;
        let cidr = self.cidr();
        let mine = self.usable_ips();
        if let Some(old) = old {
            if old.metadata.is_terminating() && !self.metadata.is_terminating() {
                return Err(fail(Problem::Terminating));
            }
            immutable(old.spec.ip_version, self.spec.ip_version, "ipVersion").map_err(fail)?;
            if old.cidr() != cidr {
                return Err(fail(Problem::Immutable {
                    field: "subnet",
                    old: old.spec.subnet.to_string(),
                    new: self.spec.subnet.to_string(),
                }));
            }
            let records = old.records();
            let in_use: IpSet = records.keys().copied().collect();
            let lost = in_use.difference(&mine);
            if !lost.is_empty() {
                let pods = records
                    .iter()
                    .filter(|(ip, _)| lost.contains(ip))
                    .map(|(_, r)| r.pod.clone())
                    .collect();
                return Err(fail(Problem::InUse { ips: lost, pods }));
            }
        }
        Addressing {
            ip_version: self.spec.ip_version,
            subnet: &self.spec.subnet,
            ips: &self.spec.ips,
            exclude_ips: &self.spec.exclude_ips,
            gateway: self.spec.gateway.as_ref(),
            routes: self.spec.routes.as_deref(),
        }
        .validate()
        .map_err(fail)?;
        if self
            .spec
            .pod_affinity
            .as_ref()
            .is_some_and(LabelSelector::is_empty)
        {
            return Err(fail(Problem::Selector {
                field: "podAffinity",
                reason: "is empty, which selects every pod: give it matchLabels or \
                         matchExpressions, or leave it out"
                    .into(),
            }));
        }
        if let Some(expected) = self.app_affinity()
            && self.spec.pod_affinity.as_ref() != Some(&expected)
        {
            return Err(fail(Problem::AutoPoolAffinity {
                expected: expected.to_string(),
                found: self
                    .spec
                    .pod_affinity
                    .as_ref()
                    .map_or_else(|| "none".to_string(), ToString::to_string),
            }));
        }
        for owner in &self.metadata.owner_references {
            if owner.kind == Kind::SpiderSubnet.name()
                && !subnets.iter().any(|s| s.metadata.name == owner.name)
            {
                return Err(fail(Problem::UnknownOwnerSubnet {
                    subnet: owner.name.clone(),
                }));
            }
        }
        for (field, sel) in [
            ("podAffinity", &self.spec.pod_affinity),
            ("namespaceAffinity", &self.spec.namespace_affinity),
            ("nodeAffinity", &self.spec.node_affinity),
        ] {
            if let Some(reason) = sel.as_ref().and_then(|s| s.problem()) {
                return Err(fail(Problem::Selector { field, reason }));
            }
        }
        for other in pools.iter().filter(|p| p.metadata.name != name) {
            let oc = other.cidr();
            if oc == cidr {
                let shared = mine.intersection(&other.usable_ips());
                if !shared.is_empty() {
                    return Err(fail(Problem::OverlappingPoolIps {
                        other: other.metadata.name.clone(),
                        ips: shared,
                    }));
                }
            } else if oc.contains(&cidr) || cidr.contains(&oc) {
                return Err(fail(Problem::OverlappingPoolCidr {
                    cidr: self.spec.subnet,
                    other: other.metadata.name.clone(),
                    other_cidr: other.spec.subnet,
                }));
            }
        }
        if let Some(subnet) = owning_subnet(&self.spec.subnet, subnets) {
            let missing = mine.difference(&subnet.usable_ips());
            if !missing.is_empty() {
                return Err(fail(Problem::NotInSubnet {
                    subnet: subnet.metadata.name.clone(),
                    ips: missing,
                }));
            }
            for (pool, claim) in subnet.claims() {
                if pool == name {
                    if self.is_auto() && claim.ips != self.spec.ips {
                        return Err(fail(Problem::AutoPoolIps {
                            expected: claim.ips,
                        }));
                    }
                    continue;
                }
                let held = mine.intersection(&claim.ips);
                if !held.is_empty() {
                    return Err(fail(Problem::HeldByPool {
                        subnet: subnet.metadata.name.clone(),
                        other: pool,
                        ips: held,
                    }));
                }
            }
        }
        Ok(())
    }
}

/// The subnet whose CIDR equals `cidr` (host bits ignored), if any.
pub fn owning_subnet<'a>(cidr: &IpNet, subnets: &'a [SpiderSubnet]) -> Option<&'a SpiderSubnet> {
    let net = cidr.trunc();
    subnets.iter().find(|s| s.cidr() == net)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ips;

    const POOL: &str = r#"{"apiVersion":"spiderpool.spidernet.io/v2beta1","kind":"SpiderIPPool",
      "metadata":{"name":"auto4-test-app-eth0-a5bd3","labels":{"ipam.spidernet.io/ippool-cidr":"10-6-0-0-16"},
                  "finalizers":["spiderpool.spidernet.io"],"resourceVersion":"5081","uid":"9f1c"},
      "spec":{"ipVersion":4,"subnet":"10.6.0.0/16","ips":["10.6.168.171-10.6.168.173"],"gateway":"10.6.0.1",
              "podAffinity":{"matchLabels":{"ipam.spidernet.io/app-name":"test-app"}},"default":false,"disable":false},
      "status":{"allocatedIPCount":2,"totalIPCount":3,
                "allocatedIPs":"{\"10.6.168.171\":{\"pod\":\"default/test-app-6f4594ff67-fkqbw\",\"podUid\":\"6a0c\"},\"10.6.168.172\":{\"pod\":\"default/test-app-6f4594ff67-gwlx8\",\"podUid\":\"2b11\"}}"}}"#;

    fn pool(name: &str, cidr: &str, ips: IpSet) -> SpiderIPPool {
        SpiderIPPool::new(name, cidr.parse().unwrap(), ips)
    }

    #[test]
    fn spiderpool_json_round_trips_with_its_status_blob() {
        let p: SpiderIPPool = serde_json::from_str(POOL).unwrap();
        let records = p.records();
        assert_eq!(records.len(), 2);
        assert_eq!(
            records[&"10.6.168.171".parse().unwrap()].pod,
            "default/test-app-6f4594ff67-fkqbw"
        );
        assert_eq!(p.allocated_count(), 2);
        let back = serde_json::to_value(&p).unwrap();
        assert_eq!(
            back,
            serde_json::from_str::<serde_json::Value>(POOL).unwrap()
        );
    }

    #[test]
    fn counts_follow_the_records() {
        let mut p: SpiderIPPool = serde_json::from_str(POOL).unwrap();
        let mut r = p.records();
        r.remove(&"10.6.168.171".parse().unwrap());
        p.set_records(r);
        let st = p.status.as_ref().unwrap();
        assert_eq!(
            (st.allocated_ip_count, st.total_ip_count),
            (Some(1), Some(3))
        );
        p.set_records(BTreeMap::new());
        assert!(
            p.status.as_ref().unwrap().allocated_ips.is_none(),
            "nil when empty, like Spiderpool"
        );
    }

    #[test]
    fn mutate_binds_to_the_subnet_of_the_same_cidr() {
        let mut subnet = SpiderSubnet::new(
            "subnet-test-ens192",
            "10.6.0.1/16".parse().unwrap(),
            ips!["10.6.168.171-10.6.168.180"],
            Some("10.6.0.1".parse().unwrap()),
        );
        subnet.mutate();
        let mut p = pool("manual", "10.6.0.0/16", ips!["10.6.168.178-10.6.168.180"]);
        p.mutate(std::slice::from_ref(&subnet));
        assert_eq!(
            p.metadata.label(LABEL_OWNER_SUBNET),
            Some("subnet-test-ens192")
        );
        assert_eq!(p.spec.gateway, Some("10.6.0.1".parse().unwrap()));
        assert_eq!(p.spec.ip_version, Some(4));
        assert!(p.validate(None, &[], std::slice::from_ref(&subnet)).is_ok());
        let mut far = pool("far", "10.6.0.0/16", ips!["10.6.169.1"]);
        far.mutate(std::slice::from_ref(&subnet));
        let err = far
            .validate(None, &[], std::slice::from_ref(&subnet))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"SpiderIPPool "far" is invalid: IPs 10.6.169.1 are not in spec.ips of SpiderSubnet "subnet-test-ens192""#
        );
    }

    /// The gaps Spiderpool's webhook closes and `berth apply` did not: an empty or invalid
    /// `podAffinity`, an auto pool selecting other pods than its application's, and an
    /// ownerReference to a subnet that is not there.
    #[test]
    fn affinity_and_owner_reference_are_checked() {
        let invalid = |p: &SpiderIPPool, subnets: &[SpiderSubnet]| {
            p.validate(None, &[], subnets).unwrap_err().to_string()
        };
        let mut p = pool("p", "10.0.0.0/24", ips!["10.0.0.10"]);
        p.spec.pod_affinity = Some(LabelSelector::default());
        assert!(invalid(&p, &[]).contains("spec.podAffinity: is empty"));
        p.spec.pod_affinity = Some(LabelSelector::eq([("app", "not valid!")]));
        let err = invalid(&p, &[]);
        assert!(
            err.contains("spec.podAffinity") && err.contains("\"not valid!\""),
            "{err}"
        );
        p.spec.pod_affinity = Some(LabelSelector::eq([("-app", "web")]));
        assert!(invalid(&p, &[]).contains("the key's name"));
        p.spec.pod_affinity = Some(LabelSelector::eq([("example.com/app", "web")]));
        assert!(p.validate(None, &[], &[]).is_ok());

        // An auto pool: its application's five labels, and nothing else.
        let app = AppRef::apps_v1(crate::WorkloadKind::Deployment, "default", "web");
        let mut auto = pool("auto4-web-eth0-1", "10.0.0.0/24", ips!["10.0.0.20"]);
        auto.metadata.labels =
            crate::autopool::auto_pool_labels(&app, "uid-1", "eth0", IpFamily::V4, "s", true);
        auto.spec.pod_affinity = Some(crate::autopool::app_affinity(&app));
        assert!(auto.validate(None, &[], &[]).is_ok());
        auto.spec.pod_affinity = Some(LabelSelector::eq([("app", "web")]));
        let err = invalid(&auto, &[]);
        assert!(
            err.contains("must select its application's pods")
                && err.contains("ipam.spidernet.io/app-name=web")
                && err.contains("found app=web"),
            "{err}"
        );
        auto.spec.pod_affinity = None;
        assert!(invalid(&auto, &[]).contains("found none"));

        // An ownerReference to a subnet.
        let mut owned = pool("owned", "10.0.0.0/24", ips!["10.0.0.30"]);
        owned
            .metadata
            .owner_references
            .push(crate::meta::OwnerReference {
                api_version: "spiderpool.spidernet.io/v2beta1".into(),
                kind: "SpiderSubnet".into(),
                name: "gone".into(),
                uid: "u".into(),
                controller: Some(true),
                block_owner_deletion: None,
            });
        assert!(
            invalid(&owned, &[]).contains(r#"names SpiderSubnet "gone", which does not exist"#)
        );
        let mut gone = SpiderSubnet::new(
            "gone",
            "10.0.0.0/24".parse().unwrap(),
            ips!["10.0.0.1-10.0.0.100"],
            None,
        );
        gone.mutate();
        assert!(owned.validate(None, &[], &[gone]).is_ok());
    }

    #[test]
    fn pools_of_one_cidr_must_not_share_ips() {
        let a = pool("a", "10.0.0.0/24", ips!["10.0.0.10-10.0.0.20"]);
        let b = pool("b", "10.0.0.0/24", ips!["10.0.0.20-10.0.0.30"]);
        let err = b.validate(None, std::slice::from_ref(&a), &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"SpiderIPPool "b" is invalid: IPs 10.0.0.20 overlap with SpiderIPPool "a""#
        );
        let c = pool("c", "10.0.0.0/25", ips!["10.0.0.40"]);
        let err = c.validate(None, std::slice::from_ref(&a), &[]).unwrap_err();
        assert!(matches!(
            err.problem(),
            Some(Problem::OverlappingPoolCidr { .. })
        ));
        let d = pool("d", "10.0.0.0/24", ips!["10.0.0.21-10.0.0.30"]);
        assert!(d.validate(None, std::slice::from_ref(&a), &[]).is_ok());
    }

    #[test]
    fn in_use_ips_cannot_be_removed() {
        let old: SpiderIPPool = serde_json::from_str(POOL).unwrap();
        let mut new = old.clone();
        new.spec.ips = ips!["10.6.168.172-10.6.168.173"];
        let err = new.validate(Some(&old), &[], &[]).unwrap_err().to_string();
        assert!(
            err.contains("10.6.168.171") && err.contains("default/test-app-6f4594ff67-fkqbw"),
            "{err}"
        );
        let mut excluded = old.clone();
        excluded.spec.exclude_ips = ips!["10.6.168.172"];
        assert!(
            excluded.validate(Some(&old), &[], &[]).is_err(),
            "excluding counts as removing"
        );
    }

    #[test]
    fn network_and_broadcast_are_never_handed_out() {
        let p = pool("edge", "10.0.0.0/30", ips!["10.0.0.0-10.0.0.3"]);
        let mut a = p.allocator(&IpSet::new());
        assert_eq!(a.capacity(), 2);
        assert_eq!(a.allocate().unwrap().to_string(), "10.0.0.1");
        assert_eq!(a.allocate().unwrap().to_string(), "10.0.0.2");
        let p31 = pool("p2p", "10.0.0.0/31", ips!["10.0.0.0-10.0.0.1"]);
        assert_eq!(p31.allocator(&IpSet::new()).capacity(), 2);
        let p = pool("r", "10.0.0.0/24", ips!["10.0.0.1-10.0.0.3"]);
        assert_eq!(
            p.allocator(&ips!["10.0.0.2"]).capacity(),
            2,
            "reserved IPs are skipped"
        );
    }
}
