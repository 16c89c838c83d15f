//! The keys of `berth-route`'s CNI config, and where the default-route NIC may come from.
//!
//! | key | from | default | meaning |
//! |---|---|---|---|
//! | `service_cidr`, `cluster_cidr`, `additional_cidr` | the seed's `veth` plugin | `[]` | CIDRs reached through the node over veth0 |
//! | `serviceCIDR`, `overlayPodCIDR`, `hijackCIDR` | Spiderpool's coordinator | `[]` | the same; all six lists are merged in this order |
//! | `podDefaultRouteNic` | coordinator | the first NIC | the NIC that keeps the default route in main |
//! | `podDefaultCniNic` | coordinator | `eth0` | the first NIC (gets the veth pair) |
//! | `tunePodRoutes` | coordinator | `true` | policy routing for the further NICs |
//! | `hostRuleTable` | coordinator | none: node routes in main | node routes in this table, behind `from all lookup <t> pref 1000` |
//! | `podRPFilter` | coordinator | `0` | `net.ipv4.conf.all.rp_filter` in the pod; negative: leave it |
//! | `vethMTU` | coordinator | `1500` | MTU of both veth ends |
//! | `mode` | coordinator | `underlay` | `auto`/`underlay`: wire; `disable(d)`: pass `prevResult` through; `overlay`: refused |
//! | `log_options.{log_file, log_level}`, `logOptions.{logFile, logLevel}` | veth / coordinator | `/var/log/berth/berth-route.log`, `INFO` | logging |
//! | `log_options.{log_max_size, log_max_age, log_max_count}`, `logOptions.{logFileMaxSize, logFileMaxAge, logFileMaxCount}` | veth / coordinator | 10 MiB, 30 days, 5 files ([`Rotation`]) | log rotation; 0 is the default |
//!
//! Other keys are ignored (the seed's `hardware_prefix`, `rp_filter`, … are not supported).
//!
//! The default-route NIC can also come from the pod annotation
//! `ipam.spidernet.io/default-route-nic`. Without an API server there is no pod to read it
//! from, so it is accepted where a runtime can put it, first found wins:
//!
//! 1. `runtimeConfig["io.kubernetes.cri.pod-annotations"]` (containerd passes the pod's
//!    annotations there to plugins declaring that capability);
//! 2. `runtimeConfig.podAnnotations`;
//! 3. `CNI_ARGS` key `ipam.spidernet.io/default-route-nic` (with `IgnoreUnknown=1`).
//!
//! The annotation wins over `podDefaultRouteNic`: it is the pod's own word, and Berth's
//! precedence is "the most specific source first" (DESIGN §2). Spiderpool lets the NAD key
//! win.

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use berth_cni::de;
use berth_cni::logging::Rotation;

use crate::error::Error;
use crate::plan::{DEFAULT_FIRST_NIC, DEFAULT_VETH_MTU, Settings};

/// The pod annotation naming the default-route NIC.
pub const DEFAULT_ROUTE_NIC_ANNOTATION: &str = "ipam.spidernet.io/default-route-nic";

/// The `runtimeConfig` key under which containerd passes pod annotations.
pub const CRI_POD_ANNOTATIONS: &str = "io.kubernetes.cri.pod-annotations";

/// Where `berth-route` logs when the config names no file.
pub const DEFAULT_LOG_FILE: &str = "/var/log/berth/berth-route.log";

/// `berth-route`'s own keys of the network config (see the [module docs](self)).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct RouteConfig {
    /// `service_cidr`.
    #[serde(deserialize_with = "list")]
    pub service_cidr: Vec<IpNet>,
    /// `cluster_cidr`.
    #[serde(deserialize_with = "list")]
    pub cluster_cidr: Vec<IpNet>,
    /// `additional_cidr`.
    #[serde(deserialize_with = "list")]
    pub additional_cidr: Vec<IpNet>,
    /// `serviceCIDR`.
    #[serde(rename = "serviceCIDR", deserialize_with = "list")]
    pub service_cidr_camel: Vec<IpNet>,
    /// `overlayPodCIDR`.
    #[serde(rename = "overlayPodCIDR", deserialize_with = "list")]
    pub overlay_pod_cidr: Vec<IpNet>,
    /// `hijackCIDR`.
    #[serde(rename = "hijackCIDR", deserialize_with = "list")]
    pub hijack_cidr: Vec<IpNet>,
    /// `podDefaultRouteNic`.
    #[serde(rename = "podDefaultRouteNic")]
    pub pod_default_route_nic: Option<String>,
    /// `podDefaultCniNic`.
    #[serde(rename = "podDefaultCniNic")]
    pub pod_default_cni_nic: Option<String>,
    /// `tunePodRoutes`.
    #[serde(rename = "tunePodRoutes")]
    pub tune_pod_routes: Option<bool>,
    /// `hostRuleTable`.
    #[serde(rename = "hostRuleTable")]
    pub host_rule_table: Option<u32>,
    /// `podRPFilter`.
    #[serde(rename = "podRPFilter")]
    pub pod_rp_filter: Option<i32>,
    /// `vethMTU`.
    #[serde(rename = "vethMTU")]
    pub veth_mtu: Option<u32>,
    /// `mode`.
    pub mode: Option<String>,
    /// `log_options` (the seed's `veth` plugin).
    pub log_options: Option<LogOptions>,
    /// `logOptions` (coordinator).
    #[serde(rename = "logOptions")]
    pub log_options_camel: Option<LogOptions>,
}

/// Logging keys, in either spelling.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct LogOptions {
    /// `log_file` / `logFile`.
    #[serde(alias = "logFile")]
    pub log_file: Option<String>,
    /// `log_level` / `logLevel`.
    #[serde(alias = "logLevel")]
    pub log_level: Option<String>,
    /// `log_max_size` / `logFileMaxSize`, in MiB.
    #[serde(alias = "logFileMaxSize", deserialize_with = "log_max_size")]
    pub log_max_size: Option<u64>,
    /// `log_max_age` / `logFileMaxAge`, in days.
    #[serde(alias = "logFileMaxAge", deserialize_with = "log_max_age")]
    pub log_max_age: Option<u64>,
    /// `log_max_count` / `logFileMaxCount`: rotated files kept.
    #[serde(alias = "logFileMaxCount", deserialize_with = "log_max_count")]
    pub log_max_count: Option<u64>,
}

impl LogOptions {
    /// How the log file rotates, defaults for the limits unset.
    pub fn rotation(&self) -> Rotation {
        Rotation::from_limits(self.log_max_size, self.log_max_age, self.log_max_count)
    }
}

fn log_max_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    de::limit(d, "log_max_size", "MiB")
}

fn log_max_age<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    de::limit(d, "log_max_age", "days")
}

fn log_max_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    de::limit(d, "log_max_count", "rotated files")
}

fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    Ok(Option::<Vec<IpNet>>::deserialize(d)?.unwrap_or_default())
}

/// What `mode` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Wire the pod (`underlay`, `auto`, or no `mode`).
    Underlay,
    /// Do nothing, pass `prevResult` through (`disable`, `disabled`).
    Disabled,
}

impl RouteConfig {
    /// The mode; `overlay` and unknown values are [`Error::Invalid`].
    pub fn mode(&self) -> Result<Mode, Error> {
        match self.mode.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("" | "auto" | "underlay") => Ok(Mode::Underlay),
            Some("disable" | "disabled") => Ok(Mode::Disabled),
            Some(other) => Err(Error::Invalid(format!(
                "mode {other:?} is not supported (underlay, auto or disabled)"
            ))),
        }
    }

    /// The merged hijack list, first occurrence kept.
    pub fn hijack(&self) -> Vec<IpNet> {
        let mut all: Vec<IpNet> = Vec::new();
        for cidr in [
            &self.service_cidr,
            &self.cluster_cidr,
            &self.additional_cidr,
            &self.service_cidr_camel,
            &self.overlay_pod_cidr,
            &self.hijack_cidr,
        ]
        .into_iter()
        .flatten()
        {
            let cidr = cidr.trunc();
            if !all.contains(&cidr) {
                all.push(cidr);
            }
        }
        all
    }

    /// The log file and level asked for, if any.
    pub fn logging(&self) -> LogOptions {
        let a = self.log_options.clone().unwrap_or_default();
        let b = self.log_options_camel.clone().unwrap_or_default();
        LogOptions {
            log_file: a.log_file.or(b.log_file),
            log_level: a.log_level.or(b.log_level),
            log_max_size: a.log_max_size.or(b.log_max_size),
            log_max_age: a.log_max_age.or(b.log_max_age),
            log_max_count: a.log_max_count.or(b.log_max_count),
        }
    }

    /// The [`Settings`], with the default-route NIC of the pod annotation when one is given
    /// (`annotation`, see [`default_route_nic_annotation`]).
    pub fn settings(&self, annotation: Option<String>) -> Settings {
        Settings {
            first_nic: self
                .pod_default_cni_nic
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| DEFAULT_FIRST_NIC.into()),
            default_route_nic: annotation
                .or_else(|| self.pod_default_route_nic.clone())
                .filter(|n| !n.is_empty()),
            hijack: self.hijack(),
            tune_pod_routes: self.tune_pod_routes.unwrap_or(true),
            veth_mtu: self.veth_mtu.filter(|m| *m > 0).unwrap_or(DEFAULT_VETH_MTU),
            host_rule_table: self.host_rule_table,
            pod_rp_filter: match self.pod_rp_filter {
                None => Some(0),
                Some(v) if v < 0 => None,
                Some(v) => Some(v.min(2) as u8),
            },
        }
    }
}

/// The pod annotation `ipam.spidernet.io/default-route-nic`, from `runtimeConfig` or
/// `CNI_ARGS` (see the [module docs](self)).
pub fn default_route_nic_annotation(
    runtime_config: Option<&Value>,
    args: &berth_cni::CniArgs,
) -> Option<String> {
    let from_runtime = runtime_config.and_then(|rc| {
        [CRI_POD_ANNOTATIONS, "podAnnotations"]
            .into_iter()
            .find_map(|key| rc.get(key)?.get(DEFAULT_ROUTE_NIC_ANNOTATION)?.as_str())
    });
    from_runtime
        .or_else(|| args.unknown_value(DEFAULT_ROUTE_NIC_ANNOTATION))
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> RouteConfig {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_seed_config() {
        let c = parse(json!({"type": "veth", "service_cidr": ["10.96.0.0/12"]}));
        let s = c.settings(None);
        assert_eq!(s.hijack, vec!["10.96.0.0/12".parse::<IpNet>().unwrap()]);
        assert_eq!(s.first_nic, "eth0");
        assert_eq!(s.default_route_nic(), "eth0");
        assert!(s.tune_pod_routes);
        assert_eq!(
            (s.veth_mtu, s.pod_rp_filter, s.host_rule_table),
            (1500, Some(0), None)
        );
        assert_eq!(c.mode().unwrap(), Mode::Underlay);
    }

    #[test]
    fn coordinator_keys() {
        let c = parse(json!({
            "serviceCIDR": ["10.96.0.0/12", "fd00:96::/108"],
            "hijackCIDR": ["169.254.0.0/16"],
            "cluster_cidr": ["10.244.0.0/16"],
            "additional_cidr": null,
            "service_cidr": ["10.96.0.1/12"],
            "podDefaultRouteNic": "net1",
            "podDefaultCniNic": "eth0",
            "hostRuleTable": 500,
            "tunePodRoutes": false,
            "podRPFilter": -1,
            "vethMTU": 9000,
            "mode": "auto",
            "logOptions": {"logLevel": "debug", "logFile": "/tmp/c.log", "logFileMaxSize": 1, "logFileMaxCount": 2}
        }));
        let s = c.settings(None);
        let cidrs: Vec<String> = s.hijack.iter().map(ToString::to_string).collect();
        assert_eq!(
            cidrs,
            [
                "10.96.0.0/12",
                "10.244.0.0/16",
                "fd00:96::/108",
                "169.254.0.0/16"
            ]
        );
        assert_eq!(s.default_route_nic(), "net1");
        assert!(!s.tune_pod_routes);
        assert_eq!(
            (s.veth_mtu, s.pod_rp_filter, s.host_rule_table),
            (9000, None, Some(500))
        );
        assert_eq!(c.logging().log_file.as_deref(), Some("/tmp/c.log"));
        assert_eq!(
            c.logging().rotation(),
            Rotation::from_limits(Some(1), None, Some(2))
        );
        assert_eq!(
            c.settings(Some("net2".into())).default_route_nic(),
            "net2",
            "the pod annotation wins"
        );
    }

    #[test]
    fn log_rotation_keys_in_either_spelling() {
        let veth = parse(
            json!({"log_options": {"log_max_size": 3, "log_max_age": 4, "log_max_count": 0}}),
        );
        assert_eq!(
            veth.logging().rotation(),
            Rotation::from_limits(Some(3), Some(4), None)
        );
        assert_eq!(parse(json!({})).logging().rotation(), Rotation::default());
        let bad: Result<RouteConfig, _> =
            serde_json::from_value(json!({"logOptions": {"logFileMaxAge": -2}}));
        let err = bad.unwrap_err().to_string();
        assert!(
            err.contains("log_max_age must be a whole number of days, 0 or more"),
            "{err}"
        );
    }

    #[test]
    fn modes() {
        assert_eq!(
            parse(json!({"mode": "disabled"})).mode().unwrap(),
            Mode::Disabled
        );
        assert!(parse(json!({"mode": "overlay"})).mode().is_err());
    }

    #[test]
    fn annotation_sources() {
        let args = berth_cni::CniArgs::parse(
            "IgnoreUnknown=1;K8S_POD_NAME=p;ipam.spidernet.io/default-route-nic=net2",
        )
        .unwrap();
        assert_eq!(
            default_route_nic_annotation(None, &args).as_deref(),
            Some("net2")
        );
        let rc = json!({CRI_POD_ANNOTATIONS: {DEFAULT_ROUTE_NIC_ANNOTATION: "net1"}});
        assert_eq!(
            default_route_nic_annotation(Some(&rc), &args).as_deref(),
            Some("net1")
        );
        let rc = json!({"podAnnotations": {DEFAULT_ROUTE_NIC_ANNOTATION: " "}});
        assert_eq!(
            default_route_nic_annotation(Some(&rc), &berth_cni::CniArgs::default()),
            None
        );
    }
}
