//! Auto pools: per-application pools carved from a SpiderSubnet and sized with the replicas.
//!
//! Pure helpers: the name and labels Spiderpool gives an auto pool, and which IPs a pool takes
//! from its subnet when it grows (the lowest free ones, so the seed's pools read
//! `10.6.168.171-10.6.168.173`) or gives back when it shrinks (the highest *unallocated* ones;
//! an IP a pod holds is never taken away).

use std::collections::BTreeMap;

use crate::annotations::{IPPOOL_IP_NUMBER, IpNumber};
use crate::meta::LabelSelector;
use crate::pool::SpiderIPPool;
use crate::range::{IpFamily, IpSet};
use crate::subnet::SpiderSubnet;
use crate::workload::AppRef;
use crate::{
    APP_API_GROUP, APP_API_VERSION, APP_KIND, APP_NAME, APP_NAMESPACE, LABEL_INTERFACE,
    LABEL_IP_VERSION, LABEL_IPPOOL_RECLAIM, LABEL_OWNER_APP_GV, LABEL_OWNER_APP_KIND,
    LABEL_OWNER_APP_NAME, LABEL_OWNER_APP_NAMESPACE, LABEL_OWNER_APP_UID, LABEL_OWNER_SUBNET,
};

/// The first five characters of the last `-` segment of a uid (`...-9a2b3c4d5e6f` → `9a2b3`).
pub fn uid5(uid: &str) -> String {
    uid.rsplit('-')
        .next()
        .unwrap_or(uid)
        .chars()
        .take(5)
        .collect::<String>()
        .to_lowercase()
}

/// `auto{4|6}-{app}-{nic}-{uid5}`, the application name shortened to fit 253 characters.
pub fn auto_pool_name(family: IpFamily, app_name: &str, nic: &str, app_uid: &str) -> String {
    let v = match family {
        IpFamily::V4 => 4,
        IpFamily::V6 => 6,
    };
    let tail = format!("-{}-{}", nic.to_lowercase(), uid5(app_uid));
    let head = format!("auto{v}-");
    let room = 253usize.saturating_sub(head.len() + tail.len());
    let app: String = app_name.to_lowercase().chars().take(room).collect();
    format!("{head}{}{tail}", app.trim_end_matches(['-', '.']))
}

/// The podAffinity of an application's auto pools (Spiderpool matches it against the pod's top
/// controller, not the pod's labels).
pub fn app_affinity(app: &AppRef) -> LabelSelector {
    LabelSelector::eq([
        (APP_API_GROUP, app.group.as_str()),
        (APP_API_VERSION, app.version.as_str()),
        (APP_KIND, app.kind.as_str()),
        (APP_NAMESPACE, app.namespace.as_str()),
        (APP_NAME, app.name.as_str()),
    ])
}

/// Spiderpool's labels of an auto pool.
pub fn auto_pool_labels(
    app: &AppRef,
    app_uid: &str,
    nic: &str,
    family: IpFamily,
    subnet: &str,
    reclaim: bool,
) -> BTreeMap<String, String> {
    [
        (LABEL_OWNER_SUBNET, subnet.to_string()),
        (LABEL_OWNER_APP_GV, app.gv_label()),
        (LABEL_OWNER_APP_KIND, app.kind.to_string()),
        (LABEL_OWNER_APP_NAMESPACE, app.namespace.clone()),
        (LABEL_OWNER_APP_NAME, app.name.clone()),
        (LABEL_OWNER_APP_UID, app_uid.to_string()),
        (LABEL_INTERFACE, nic.to_string()),
        (LABEL_IP_VERSION, family.to_string()),
        (LABEL_IPPOOL_RECLAIM, reclaim.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// What an application wants of one auto pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoPoolSpec {
    /// The application.
    pub app: AppRef,
    /// Its uid.
    pub app_uid: String,
    /// The pod interface.
    pub nic: String,
    /// The family.
    pub family: IpFamily,
    /// The SpiderSubnet to carve from.
    pub subnet: String,
    /// The size rule.
    pub number: IpNumber,
    /// Whether the pool goes with the application.
    pub reclaim: bool,
    /// Desired number of IPs.
    pub desired: u32,
}

impl AutoPoolSpec {
    /// The pool name.
    pub fn name(&self) -> String {
        auto_pool_name(self.family, &self.app.name, &self.nic, &self.app_uid)
    }

    /// A new pool object holding `ips` of `subnet` (mutated and valid).
    pub fn build(&self, subnet: &SpiderSubnet, ips: IpSet) -> SpiderIPPool {
        let mut p = SpiderIPPool::new(&self.name(), subnet.spec.subnet, ips);
        self.stamp(&mut p);
        p.spec.pod_affinity = Some(app_affinity(&self.app));
        p.mutate(std::slice::from_ref(subnet));
        p
    }

    /// Writes the labels and the size annotation onto an existing pool (adopting a retained
    /// pool of a former incarnation of the application).
    pub fn stamp(&self, p: &mut SpiderIPPool) {
        p.metadata.labels.extend(auto_pool_labels(
            &self.app,
            &self.app_uid,
            &self.nic,
            self.family,
            &self.subnet,
            self.reclaim,
        ));
        p.metadata
            .annotations
            .insert(IPPOOL_IP_NUMBER.into(), self.number.to_annotation());
    }
}

/// The IPs a pool gives back to shrink by `excess`: the highest ones no pod holds.
pub fn shrink_pick(pool: &SpiderIPPool, excess: u128) -> IpSet {
    pool.spec
        .ips
        .difference(&pool.allocated_ips())
        .last_n(excess)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::WorkloadKind;
    use crate::{IpRecord, ips};

    #[test]
    fn names_follow_spiderpool() {
        let uid = "1f0d2a55-7c1e-4b7e-9d3c-a5bd3f0e11aa";
        assert_eq!(uid5(uid), "a5bd3");
        assert_eq!(
            auto_pool_name(IpFamily::V4, "test-app", "eth0", uid),
            "auto4-test-app-eth0-a5bd3"
        );
        assert_eq!(
            auto_pool_name(IpFamily::V6, "Web", "net1", uid),
            "auto6-web-net1-a5bd3"
        );
        let long = "a".repeat(400);
        let n = auto_pool_name(IpFamily::V4, &long, "eth0", uid);
        assert_eq!(n.len(), 253);
        assert!(n.ends_with("-eth0-a5bd3"));
    }

    #[test]
    fn built_pools_carry_spiderpools_labels_and_the_subnet_gateway() {
        let mut subnet = SpiderSubnet::new(
            "subnet-test-ens192",
            "10.6.0.1/16".parse().unwrap(),
            ips!["10.6.168.171-10.6.168.180"],
            Some("10.6.0.1".parse().unwrap()),
        );
        subnet.mutate();
        let spec = AutoPoolSpec {
            app: AppRef::apps_v1(WorkloadKind::Deployment, "default", "test-app"),
            app_uid: "u-a5bd3f".into(),
            nic: "eth0".into(),
            family: IpFamily::V4,
            subnet: "subnet-test-ens192".into(),
            number: IpNumber::Flexible(1),
            reclaim: true,
            desired: 3,
        };
        let p = spec.build(&subnet, subnet.free_ips(&IpSet::new()).first_n(3));
        assert_eq!(p.metadata.name, "auto4-test-app-eth0-a5bd3");
        assert_eq!(p.spec.ips, ips!["10.6.168.171-10.6.168.173"]);
        assert_eq!(p.spec.gateway, Some("10.6.0.1".parse().unwrap()));
        assert_eq!(p.metadata.label(LABEL_OWNER_APP_KIND), Some("Deployment"));
        assert_eq!(p.metadata.label(LABEL_OWNER_APP_GV), Some("apps_v1"));
        assert_eq!(p.metadata.label(LABEL_IP_VERSION), Some("IPv4"));
        assert_eq!(p.metadata.label(LABEL_IPPOOL_RECLAIM), Some("true"));
        assert_eq!(
            p.metadata.label(LABEL_OWNER_SUBNET),
            Some("subnet-test-ens192")
        );
        assert_eq!(p.metadata.annotation(IPPOOL_IP_NUMBER), Some("+1"));
        assert!(p.is_auto());
        assert_eq!(
            p.spec.pod_affinity.as_ref().unwrap().match_labels[APP_NAME],
            "test-app"
        );
    }

    #[test]
    fn shrinking_gives_back_the_highest_unallocated_ips() {
        let mut p = SpiderIPPool::new(
            "p",
            "10.0.0.0/24".parse().unwrap(),
            ips!["10.0.0.1-10.0.0.5"],
        );
        let rec = IpRecord {
            pod: "default/a".into(),
            pod_uid: "u".into(),
            container_id: None,
            interface: None,
            network: None,
            netns: None,
        };
        p.set_records([("10.0.0.5".parse().unwrap(), rec)].into_iter().collect());
        assert_eq!(shrink_pick(&p, 2), ips!["10.0.0.3-10.0.0.4"]);
        assert_eq!(shrink_pick(&p, 9), ips!["10.0.0.1-10.0.0.4"]);
    }
}
