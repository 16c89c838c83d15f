//! `SpiderSubnet`: a subnet and the IPs pools may be carved from.
//!
//! `status.controlledIPPools` is the source of truth for which pool holds which of the subnet's
//! IPs. The engine writes a pool's claim there *before* the pool gets the IPs and removes it only
//! *after* the pool gave them up, so a crash between the two writes leaves IPs claimed but unused
//! (found and returned by GC), never the same IP in two pools.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::addressing::{Addressing, JsonString, check_name, cidr_label, family_of, usable_ips};
use crate::error::{Error, Problem};
use crate::meta::{Kind, ObjectMeta, cidr_spec, spiderpool_api_version, spiderpool_kind};
use crate::pool::SpiderIPPool;
use crate::range::{IpFamily, IpSet};
use crate::{FINALIZER, LABEL_SUBNET_CIDR};

spiderpool_kind! {
    /// A `SpiderSubnet` (`spiderpool.spidernet.io/v2beta1`, cluster-scoped).
    pub struct SpiderSubnet (kind default "SpiderSubnet::kind_name") {
        /// Spec.
        pub spec: SubnetSpec,
        /// Status, written by the engine.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub status: Option<SubnetStatus>,
    }
}

cidr_spec! {
    /// `SpiderSubnet.spec`.
    pub struct SubnetSpec {
        /// Removed from Spiderpool in 2025; accepted so old YAML applies, and dropped.
        #[serde(default, skip_serializing)]
        pub vlan: Option<serde_json::Value>,
    }
}

/// `SpiderSubnet.status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubnetStatus {
    /// Pool name → the IPs it holds (a JSON document in a string, as Spiderpool stores it).
    #[serde(
        default,
        rename = "controlledIPPools",
        skip_serializing_if = "Option::is_none"
    )]
    pub controlled_ip_pools: Option<JsonString<BTreeMap<String, PoolClaim>>>,
    /// IPs of the subnet (ips minus excludeIPs).
    #[serde(
        default,
        rename = "totalIPCount",
        skip_serializing_if = "Option::is_none"
    )]
    pub total_ip_count: Option<i64>,
    /// IPs handed to pools.
    #[serde(
        default,
        rename = "allocatedIPCount",
        skip_serializing_if = "Option::is_none"
    )]
    pub allocated_ip_count: Option<i64>,
}

/// One entry of `controlledIPPools`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolClaim {
    /// The IPs held by the pool.
    pub ips: IpSet,
    /// The application of an auto pool; written as Spiderpool writes it,
    /// `<group>_<version>_<Kind>_<namespace>_<name>`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::workload::application_id"
    )]
    pub application: Option<crate::workload::AppRef>,
    /// When the claim was first written (Berth's own field; GC leaves young claims alone).
    #[serde(default, rename = "claimedAt", skip_serializing_if = "Option::is_none")]
    pub claimed_at: Option<String>,
}

impl SpiderSubnet {
    /// A subnet with just the fields a user writes.
    pub fn new(name: &str, subnet: IpNet, ips: IpSet, gateway: Option<IpAddr>) -> Self {
        SpiderSubnet {
            api_version: spiderpool_api_version(),
            kind: Self::kind_name(),
            metadata: ObjectMeta::named(name),
            spec: SubnetSpec {
                ip_version: None,
                subnet,
                ips,
                exclude_ips: IpSet::new(),
                gateway,
                routes: None,
                vlan: None,
            },
            status: None,
        }
    }

    /// The network (host bits cleared).
    pub fn cidr(&self) -> IpNet {
        self.spec.subnet.trunc()
    }

    /// The IP version of the subnet.
    pub fn family(&self) -> IpFamily {
        family_of(&self.spec.subnet)
    }

    /// The subnet's own IPs: `ips` minus `excludeIPs` (and network/broadcast for IPv4).
    pub fn usable_ips(&self) -> IpSet {
        usable_ips(&self.spec.subnet, &self.spec.ips, &self.spec.exclude_ips)
    }

    /// The claims of `status.controlledIPPools`.
    pub fn claims(&self) -> BTreeMap<String, PoolClaim> {
        self.status
            .as_ref()
            .and_then(|s| s.controlled_ip_pools.as_ref())
            .map(|c| c.0.clone())
            .unwrap_or_default()
    }

    /// The IPs handed to pools.
    pub fn claimed_ips(&self) -> IpSet {
        self.claims()
            .values()
            .fold(IpSet::new(), |acc, c| acc.union(&c.ips))
    }

    /// The IPs the subnet can still hand to pools: its own minus every claim minus `reserved`.
    pub fn free_ips(&self, reserved: &IpSet) -> IpSet {
        self.usable_ips()
            .difference(&self.claimed_ips())
            .difference(reserved)
    }

    /// Replaces the claims and recomputes the counts.
    pub fn set_claims(&mut self, claims: BTreeMap<String, PoolClaim>) {
        let allocated: IpSet = claims
            .values()
            .fold(IpSet::new(), |acc, c| acc.union(&c.ips));
        let total = clamp_count(self.usable_ips().len());
        let status = self.status.get_or_insert_with(Default::default);
        status.allocated_ip_count = Some(clamp_count(allocated.len()));
        status.controlled_ip_pools = (!claims.is_empty()).then_some(JsonString(claims));
        status.total_ip_count = Some(total);
    }

    /// Spiderpool's mutating webhook: derive `ipVersion`, set the CIDR label and finalizer.
    pub fn mutate(&mut self) {
        if self.spec.ip_version.is_none() {
            self.spec.ip_version = Some(self.family().version());
        }
        self.spec.vlan = None;
        self.metadata
            .labels
            .insert(LABEL_SUBNET_CIDR.into(), cidr_label(&self.spec.subnet));
        // Not on a terminating object: removing the finalizer is how it goes (Spiderpool's
        // webhook leaves terminating objects alone too).
        if !self.metadata.is_terminating()
            && !self.metadata.finalizers.iter().any(|f| f == FINALIZER)
        {
            self.metadata.finalizers.push(FINALIZER.into());
        }
        let claims = self.claims();
        self.set_claims(claims);
    }

    /// Spiderpool's validating webhook: the subnet against its stored version (`old`), the
    /// other subnets and the pools that exist.
    pub fn validate(
        &self,
        old: Option<&SpiderSubnet>,
        subnets: &[SpiderSubnet],
        pools: &[SpiderIPPool],
    ) -> Result<(), Error> {
        let name = self.metadata.name.as_str();
        let fail = |p: Problem| Error::invalid(Kind::SpiderSubnet, name, p);
        check_name(name).map_err(fail)?;
        let own = self.usable_ips();
        let cidr = self.cidr();
        if let Some(old) = old {
            // A terminating subnet's spec is frozen; its metadata is not (its finalizer is
            // removed to let it go).
            if old.metadata.is_terminating() && self.spec != old.spec {
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
            let mut lost = IpSet::new();
            let mut holders = Vec::new();
            for (pool, claim) in old.claims() {
                let gone = claim.ips.difference(&own);
                if !gone.is_empty() {
                    lost = lost.union(&gone);
                    holders.push(pool);
                }
            }
            if !lost.is_empty() {
                return Err(fail(Problem::HeldByPools {
                    ips: lost,
                    pools: holders,
                }));
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
        for other in subnets.iter().filter(|s| s.metadata.name != name) {
            let oc = other.cidr();
            if oc.contains(&cidr) || cidr.contains(&oc) {
                return Err(fail(Problem::OverlappingSubnet {
                    cidr: self.spec.subnet,
                    other: other.metadata.name.clone(),
                    other_cidr: other.spec.subnet,
                }));
            }
        }
        for pool in pools {
            let pc = pool.cidr();
            if pc == cidr {
                let outside = pool.usable_ips().difference(&own);
                if !outside.is_empty() {
                    return Err(fail(Problem::HeldByPools {
                        ips: outside,
                        pools: vec![pool.metadata.name.clone()],
                    }));
                }
            } else if pc.contains(&cidr) || cidr.contains(&pc) {
                return Err(fail(Problem::OverlappingPoolCidr {
                    cidr: self.spec.subnet,
                    other: pool.metadata.name.clone(),
                    other_cidr: pool.spec.subnet,
                }));
            }
        }
        Ok(())
    }
}

/// Checks that an `ipVersion` did not change.
pub(crate) fn immutable(
    old: Option<i64>,
    new: Option<i64>,
    field: &'static str,
) -> Result<(), Problem> {
    if old.is_some() && new.is_some() && old != new {
        return Err(Problem::Immutable {
            field,
            old: format!("{}", old.unwrap_or_default()),
            new: format!("{}", new.unwrap_or_default()),
        });
    }
    Ok(())
}

/// A count as Kubernetes stores it (int64), saturating.
pub(crate) fn clamp_count(n: u128) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ips;

    pub(crate) const SEED: &str = r#"
apiVersion: spiderpool.spidernet.io/v2beta1
kind: SpiderSubnet
metadata:
  name: subnet-test-ens192
spec:
  ipVersion: 4
  ips:
  - "10.6.168.171-10.6.168.180"
  subnet: "10.6.0.1/16"
  gateway: "10.6.0.1"
  vlan: 0
"#;

    fn seed() -> SpiderSubnet {
        serde_yaml::from_str(SEED).unwrap()
    }

    #[test]
    fn the_seed_subnet_parses_and_vlan_is_dropped() {
        let mut s = seed();
        assert_eq!(s.spec.subnet.to_string(), "10.6.0.1/16");
        assert_eq!(s.cidr().to_string(), "10.6.0.0/16");
        assert_eq!(s.usable_ips(), ips!["10.6.168.171-10.6.168.180"]);
        s.mutate();
        assert_eq!(s.metadata.label(LABEL_SUBNET_CIDR), Some("10-6-0-0-16"));
        assert_eq!(s.metadata.finalizers, [FINALIZER]);
        let st = s.status.as_ref().unwrap();
        assert_eq!(
            (st.total_ip_count, st.allocated_ip_count),
            (Some(10), Some(0))
        );
        let json = serde_json::to_value(&s).unwrap();
        assert!(json["spec"].get("vlan").is_none());
        assert!(s.validate(None, &[], &[]).is_ok());
    }

    #[test]
    fn unknown_spec_fields_are_refused() {
        let err = serde_yaml::from_str::<SpiderSubnet>(&SEED.replace("vlan: 0", "gatway: 1.2.3.4"))
            .unwrap_err();
        assert!(err.to_string().contains("gatway"), "{err}");
    }

    #[test]
    fn status_blob_round_trips_as_spiderpool_writes_it() {
        let json = r#"{"apiVersion":"spiderpool.spidernet.io/v2beta1","kind":"SpiderSubnet",
            "metadata":{"name":"s"},"spec":{"ipVersion":4,"subnet":"10.6.0.0/16","ips":["10.6.168.171-10.6.168.180"]},
            "status":{"allocatedIPCount":3,"totalIPCount":10,
              "controlledIPPools":"{\"auto4-test-app-eth0-a5bd3\":{\"ips\":[\"10.6.168.171-10.6.168.173\"],\"application\":\"apps_v1_Deployment_default_test-app\"}}"}}"#;
        let s: SpiderSubnet = serde_json::from_str(json).unwrap();
        let claims = s.claims();
        assert_eq!(
            claims["auto4-test-app-eth0-a5bd3"].ips,
            ips!["10.6.168.171-10.6.168.173"]
        );
        let back: serde_json::Value = serde_json::to_value(&s).unwrap();
        assert_eq!(
            back,
            serde_json::from_str::<serde_json::Value>(json).unwrap()
        );
    }

    #[test]
    fn overlapping_subnets_are_refused() {
        let a = seed();
        let mut b = seed();
        b.metadata.name = "other".into();
        b.spec.subnet = "10.6.168.0/24".parse().unwrap();
        b.spec.gateway = None;
        let err = b.validate(None, std::slice::from_ref(&a), &[]).unwrap_err();
        assert!(
            err.to_string().contains(r#"SpiderSubnet "other" is invalid: subnet 10.6.168.0/24 overlaps SpiderSubnet "subnet-test-ens192""#),
            "{err}"
        );
    }

    #[test]
    fn updates_keep_cidr_version_and_claimed_ips() {
        let mut old = seed();
        old.mutate();
        let mut claims = BTreeMap::new();
        claims.insert(
            "p".to_string(),
            PoolClaim {
                ips: ips!["10.6.168.171-10.6.168.173"],
                application: None,
                claimed_at: None,
            },
        );
        old.set_claims(claims);
        let mut new = old.clone();
        new.spec.subnet = "10.6.0.0/24".parse().unwrap();
        let err = new.validate(Some(&old), &[], &[]).unwrap_err();
        assert!(matches!(
            err.problem(),
            Some(Problem::Immutable {
                field: "subnet",
                ..
            })
        ));
        let mut new = old.clone();
        new.spec.ips = ips!["10.6.168.173-10.6.168.180"];
        let err = new.validate(Some(&old), &[], &[]).unwrap_err().to_string();
        assert!(
            err.contains("10.6.168.171-10.6.168.172") && err.contains("\"p\""),
            "{err}"
        );
        let mut new = old.clone();
        new.spec.ips = ips!["10.6.168.171-10.6.168.190"];
        assert!(new.validate(Some(&old), &[], &[]).is_ok());
    }
}
