//! The `ipam.spidernet.io/*` annotations, parsed once into types.
//!
//! Values are JSON (or plain strings) as Spiderpool documents them. Where Spiderpool's Go
//! decoder silently ignores a misspelt key, Berth refuses it: a typo in `ipv4` would otherwise
//! send a pod to the wrong pool without a word.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::addressing::Route;
use crate::error::Error;

/// `ipam.spidernet.io/subnets`.
pub const SUBNETS: &str = "ipam.spidernet.io/subnets";
/// `ipam.spidernet.io/subnet`.
pub const SUBNET: &str = "ipam.spidernet.io/subnet";
/// `ipam.spidernet.io/ippool-ip-number`.
pub const IPPOOL_IP_NUMBER: &str = "ipam.spidernet.io/ippool-ip-number";
/// `ipam.spidernet.io/ippool-reclaim`.
pub const IPPOOL_RECLAIM: &str = "ipam.spidernet.io/ippool-reclaim";
/// `ipam.spidernet.io/ippool`.
pub const IPPOOL: &str = "ipam.spidernet.io/ippool";
/// `ipam.spidernet.io/ippools`.
pub const IPPOOLS: &str = "ipam.spidernet.io/ippools";
/// `ipam.spidernet.io/routes`.
pub const ROUTES: &str = "ipam.spidernet.io/routes";
/// `ipam.spidernet.io/default-route-nic`.
pub const DEFAULT_ROUTE_NIC: &str = "ipam.spidernet.io/default-route-nic";
/// Namespace annotation `ipam.spidernet.io/default-ipv4-ippool`.
pub const NS_DEFAULT_IPV4_IPPOOL: &str = "ipam.spidernet.io/default-ipv4-ippool";
/// Namespace annotation `ipam.spidernet.io/default-ipv6-ippool`.
pub const NS_DEFAULT_IPV6_IPPOOL: &str = "ipam.spidernet.io/default-ipv6-ippool";
/// Multus: the NetworkAttachmentDefinition of the first NIC.
pub const MULTUS_DEFAULT_NETWORK: &str = "v1.multus-cni.io/default-network";
/// Multus: the NetworkAttachmentDefinitions of further NICs.
pub const MULTUS_NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";

/// One NIC of `ipam.spidernet.io/subnets`: the subnet each family's auto pool is carved from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetItem {
    /// The pod interface.
    pub interface: String,
    /// The IPv4 SpiderSubnet.
    pub ipv4: Option<String>,
    /// The IPv6 SpiderSubnet.
    pub ipv6: Option<String>,
}

/// One entry of `ipam.spidernet.io/ippools`, or the value of `ipam.spidernet.io/ippool`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolItem {
    /// The pod interface (absent in `ippool` and in "no name" `ippools`).
    pub interface: Option<String>,
    /// IPv4 pool names or patterns, in order of preference.
    pub ipv4: Vec<String>,
    /// IPv6 pool names or patterns, in order of preference.
    pub ipv6: Vec<String>,
    /// No default route through this NIC's gateway.
    pub clean_gateway: Option<bool>,
}

/// `ipam.spidernet.io/ippool-ip-number`: how many IPs an auto pool holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpNumber {
    /// `"N"`: exactly N.
    Fixed(u32),
    /// `"+N"`: replicas + N.
    Flexible(u32),
}

impl IpNumber {
    /// The pool size for a replica count.
    pub fn desired(self, replicas: u32) -> u32 {
        match self {
            IpNumber::Fixed(n) => n,
            IpNumber::Flexible(n) => replicas.saturating_add(n),
        }
    }

    /// The annotation value (`+1`, `3`).
    pub fn to_annotation(self) -> String {
        match self {
            IpNumber::Fixed(n) => n.to_string(),
            IpNumber::Flexible(n) => format!("+{n}"),
        }
    }

    /// Parses `"N"` or `"+N"`.
    pub fn parse(v: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::Annotation {
            key: IPPOOL_IP_NUMBER.into(),
            reason: format!("{v:?} {reason}"),
        };
        let t = v.trim();
        let (flexible, digits) = match t.strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (false, t),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("is not \"N\" or \"+N\" with N a whole number"));
        }
        let n: u32 = digits.parse().map_err(|_| bad("is too large"))?;
        Ok(if flexible {
            IpNumber::Flexible(n)
        } else {
            IpNumber::Fixed(n)
        })
    }
}

/// Every IPAM annotation of a pod (template), parsed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodAnnotations {
    /// Auto pools per NIC (`subnets`, or `subnet` as a one-NIC list).
    pub subnets: Option<Vec<SubnetItem>>,
    /// Auto pool size.
    pub ip_number: Option<IpNumber>,
    /// Whether auto pools go with the application (default true).
    pub reclaim: Option<bool>,
    /// Manual pools for several NICs.
    pub ippools: Option<Vec<PoolItem>>,
    /// Manual pools for the NIC being added.
    pub ippool: Option<PoolItem>,
    /// Extra routes, attached to the NIC whose subnet holds the gateway.
    pub routes: Vec<Route>,
    /// The NIC that carries the default route.
    pub default_route_nic: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubnetItem {
    #[serde(default)]
    interface: Option<String>,
    #[serde(default)]
    ipv4: Vec<String>,
    #[serde(default)]
    ipv6: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPoolItem {
    #[serde(default)]
    interface: Option<String>,
    #[serde(default)]
    ipv4: Vec<String>,
    #[serde(default)]
    ipv6: Vec<String>,
    #[serde(default)]
    cleangateway: Option<bool>,
}

fn json<'a, T: Deserialize<'a>>(key: &str, v: &'a str) -> Result<T, Error> {
    serde_json::from_str(v).map_err(|e| Error::Annotation {
        key: key.into(),
        reason: format!("malformed JSON: {e}"),
    })
}

fn annotation_error(key: &str, reason: impl Into<String>) -> Error {
    Error::Annotation {
        key: key.into(),
        reason: reason.into(),
    }
}

fn subnet_item(key: &str, raw: RawSubnetItem, default_if: bool) -> Result<SubnetItem, Error> {
    let interface = match raw.interface {
        Some(i) if !i.is_empty() => i,
        _ if default_if => "eth0".to_string(),
        _ => return Err(annotation_error(key, "every item needs an \"interface\"")),
    };
    if raw.ipv4.is_empty() && raw.ipv6.is_empty() {
        return Err(annotation_error(
            key,
            format!("{interface}: neither \"ipv4\" nor \"ipv6\" names a SpiderSubnet"),
        ));
    }
    for list in [&raw.ipv4, &raw.ipv6] {
        if list.len() > 1 {
            return Err(annotation_error(
                key,
                format!(
                    "{interface}: one SpiderSubnet per IP version, not {list:?} (an auto pool is carved from one subnet)"
                ),
            ));
        }
    }
    Ok(SubnetItem {
        interface,
        ipv4: raw.ipv4.into_iter().next(),
        ipv6: raw.ipv6.into_iter().next(),
    })
}

/// Refuses an interface listed twice, and a SpiderSubnet named twice: by two interfaces, or
/// for both IP versions of one (a SpiderSubnet has one IP version).
fn check_subnet_items(key: &str, items: &[SubnetItem]) -> Result<(), Error> {
    let mut seen_if: Vec<&str> = Vec::new();
    let mut seen_subnet: Vec<(&str, &str)> = Vec::new();
    for it in items {
        if seen_if.contains(&it.interface.as_str()) {
            return Err(annotation_error(
                key,
                format!("interface {} is listed twice", it.interface),
            ));
        }
        seen_if.push(&it.interface);
        for s in it.ipv4.iter().chain(&it.ipv6) {
            if let Some((_, user)) = seen_subnet.iter().find(|(name, _)| name == s) {
                let reason = if *user == it.interface {
                    format!(
                        "{user}: SpiderSubnet {s} is named for both IPv4 and IPv6 (a SpiderSubnet has one IP version)"
                    )
                } else {
                    format!("SpiderSubnet {s} is used by two interfaces")
                };
                return Err(annotation_error(key, reason));
            }
            seen_subnet.push((s, &it.interface));
        }
    }
    Ok(())
}

/// Go's `strconv.ParseBool`.
fn parse_bool(key: &str, v: &str) -> Result<bool, Error> {
    match v.trim() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        other => Err(annotation_error(
            key,
            format!("{other:?} is not true or false"),
        )),
    }
}

impl PodAnnotations {
    /// Parses the IPAM annotations among `annotations`; others are ignored.
    pub fn parse(annotations: &BTreeMap<String, String>) -> Result<Self, Error> {
        let mut out = PodAnnotations::default();
        if let Some(v) = annotations.get(SUBNETS) {
            let raw: Vec<RawSubnetItem> = json(SUBNETS, v)?;
            let single = raw.len() == 1;
            let items = raw
                .into_iter()
                .map(|r| subnet_item(SUBNETS, r, single))
                .collect::<Result<Vec<_>, _>>()?;
            check_subnet_items(SUBNETS, &items)?;
            if items.is_empty() {
                return Err(annotation_error(SUBNETS, "the list is empty"));
            }
            out.subnets = Some(items);
        } else if let Some(v) = annotations.get(SUBNET) {
            let raw: RawSubnetItem = json(SUBNET, v)?;
            let items = vec![subnet_item(SUBNET, raw, true)?];
            check_subnet_items(SUBNET, &items)?;
            out.subnets = Some(items);
        }
        if let Some(v) = annotations.get(IPPOOL_IP_NUMBER) {
            out.ip_number = Some(IpNumber::parse(v)?);
        }
        if let Some(v) = annotations.get(IPPOOL_RECLAIM) {
            out.reclaim = Some(parse_bool(IPPOOL_RECLAIM, v)?);
        }
        if let Some(v) = annotations.get(IPPOOLS) {
            let raw: Vec<RawPoolItem> = json(IPPOOLS, v)?;
            if raw.is_empty() {
                return Err(annotation_error(IPPOOLS, "the list is empty"));
            }
            let named = raw.iter().filter(|r| r.interface.is_some()).count();
            if named != 0 && named != raw.len() {
                return Err(annotation_error(
                    IPPOOLS,
                    "either every item names its \"interface\" or none does",
                ));
            }
            let mut seen: Vec<String> = Vec::new();
            let mut items = Vec::new();
            for r in raw {
                if let Some(i) = &r.interface {
                    if seen.contains(i) {
                        return Err(annotation_error(
                            IPPOOLS,
                            format!("interface {i} is listed twice"),
                        ));
                    }
                    seen.push(i.clone());
                }
                if r.ipv4.is_empty() && r.ipv6.is_empty() {
                    return Err(annotation_error(
                        IPPOOLS,
                        format!(
                            "{}: neither \"ipv4\" nor \"ipv6\" names a pool",
                            r.interface.as_deref().unwrap_or("an item")
                        ),
                    ));
                }
                items.push(PoolItem {
                    interface: r.interface,
                    ipv4: r.ipv4,
                    ipv6: r.ipv6,
                    clean_gateway: r.cleangateway,
                });
            }
            out.ippools = Some(items);
        }
        if let Some(v) = annotations.get(IPPOOL) {
            let r: RawPoolItem = json(IPPOOL, v)?;
            if r.interface.is_some() {
                return Err(annotation_error(
                    IPPOOL,
                    "takes no \"interface\"; use ipam.spidernet.io/ippools for several NICs",
                ));
            }
            if r.ipv4.is_empty() && r.ipv6.is_empty() {
                return Err(annotation_error(
                    IPPOOL,
                    "neither \"ipv4\" nor \"ipv6\" names a pool",
                ));
            }
            out.ippool = Some(PoolItem {
                interface: None,
                ipv4: r.ipv4,
                ipv6: r.ipv6,
                clean_gateway: r.cleangateway,
            });
        }
        if let Some(v) = annotations.get(ROUTES) {
            out.routes = json(ROUTES, v)?;
        }
        if let Some(v) = annotations.get(DEFAULT_ROUTE_NIC) {
            let nic = v.trim();
            if nic.is_empty() {
                return Err(annotation_error(DEFAULT_ROUTE_NIC, "is empty"));
            }
            out.default_route_nic = Some(nic.to_string());
        }
        Ok(out)
    }

    /// The NICs the annotations name, in their order and once each: the interfaces of
    /// `subnets`, else those of the `ippools` items that name one. A pod's NICs take their IPs
    /// together (an ADD allocates the others ahead), and the controller reserves them
    /// together before the ADD; both ask here.
    pub fn named_interfaces(&self) -> Vec<String> {
        let named: Vec<&str> = match (&self.subnets, &self.ippools) {
            (Some(items), _) => items.iter().map(|i| i.interface.as_str()).collect(),
            (None, Some(items)) => items
                .iter()
                .filter_map(|i| i.interface.as_deref())
                .collect(),
            (None, None) => Vec::new(),
        };
        let mut out: Vec<String> = Vec::new();
        for n in named {
            if !out.iter().any(|o| o == n) {
                out.push(n.to_string());
            }
        }
        out
    }

    /// The `ippools` entry for a NIC: by name, or by position (`eth0`, `net1`, ...) when the
    /// items name no interface.
    pub fn ippools_for(&self, nic: &str) -> Result<Option<&PoolItem>, Error> {
        let Some(items) = &self.ippools else {
            return Ok(None);
        };
        if items.iter().all(|i| i.interface.is_none()) {
            let index = nic_index(nic);
            return match index.and_then(|i| items.get(i)) {
                Some(item) => Ok(Some(item)),
                None => Err(annotation_error(
                    IPPOOLS,
                    format!(
                        "has {} items without interface names, none for {nic} (items map to eth0, net1, net2, ...)",
                        items.len()
                    ),
                )),
            };
        }
        match items.iter().find(|i| i.interface.as_deref() == Some(nic)) {
            Some(item) => Ok(Some(item)),
            None => Err(annotation_error(
                IPPOOLS,
                format!(
                    "lists interfaces {:?} but not {nic}, the one being added",
                    items
                        .iter()
                        .filter_map(|i| i.interface.clone())
                        .collect::<Vec<_>>()
                ),
            )),
        }
    }

    /// The `subnets` entry for a NIC.
    pub fn subnet_for(&self, nic: &str) -> Option<&SubnetItem> {
        self.subnets.as_ref()?.iter().find(|s| s.interface == nic)
    }
}

/// Position of a NIC in Multus' naming: `eth0` is 0, `net<N>` is N.
pub fn nic_index(nic: &str) -> Option<usize> {
    if nic == "eth0" {
        return Some(0);
    }
    nic.strip_prefix("net")?.parse().ok()
}

/// Pool names of a namespace default annotation (`'["pool-a","pool-*"]'`).
pub fn namespace_default_pools(key: &str, value: &str) -> Result<Vec<String>, Error> {
    json(key, value)
}

/// The NetworkAttachmentDefinition (`namespace/name`) attaching `nic`, from Multus'
/// annotations: `v1.multus-cni.io/default-network` for eth0, `k8s.v1.cni.cncf.io/networks`
/// (JSON list or comma form `ns/name@ifname`) for the others, `net<i+1>` when unnamed.
/// Names without a namespace are in the pod's.
pub fn multus_network_for(
    annotations: &BTreeMap<String, String>,
    pod_namespace: &str,
    nic: &str,
) -> Result<Option<String>, Error> {
    let qualify = |s: &str| {
        if s.contains('/') {
            s.to_string()
        } else {
            format!("{pod_namespace}/{s}")
        }
    };
    if nic == "eth0" {
        return Ok(annotations
            .get(MULTUS_DEFAULT_NETWORK)
            .map(|v| qualify(v.trim())));
    }
    let Some(v) = annotations.get(MULTUS_NETWORKS) else {
        return Ok(None);
    };
    #[derive(Deserialize)]
    struct Sel {
        name: String,
        #[serde(default)]
        namespace: Option<String>,
        #[serde(default)]
        interface: Option<String>,
    }
    let t = v.trim();
    let entries: Vec<(String, Option<String>)> = if t.starts_with('[') {
        let sels: Vec<Sel> = json(MULTUS_NETWORKS, t)?;
        sels.into_iter()
            .map(|s| {
                let full = match s.namespace {
                    Some(ns) => format!("{ns}/{}", s.name),
                    None => qualify(&s.name),
                };
                (full, s.interface)
            })
            .collect()
    } else {
        t.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| match s.split_once('@') {
                Some((n, i)) => (qualify(n), Some(i.to_string())),
                None => (qualify(s), None),
            })
            .collect()
    };
    for (i, (net, iface)) in entries.iter().enumerate() {
        let name = iface.clone().unwrap_or_else(|| format!("net{}", i + 1));
        if name == nic {
            return Ok(Some(net.clone()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const SEED_SUBNETS: &str = r#"[
            {
              "interface": "eth0",
              "ipv4": [
                "subnet-test-ens192"
              ]
            },{
              "interface": "net1",
              "ipv4": [
                "subnet-test-ens224"
              ]
            }
         ]"#;

    #[test]
    fn the_seed_annotations_parse() {
        let a = PodAnnotations::parse(&ann(&[
            (SUBNETS, SEED_SUBNETS),
            (IPPOOL_IP_NUMBER, "+1"),
            (MULTUS_DEFAULT_NETWORK, "kube-system/macvlan-conf-ens192"),
            (MULTUS_NETWORKS, "kube-system/macvlan-conf-ens224"),
        ]))
        .unwrap();
        assert_eq!(
            a.subnets.as_deref().unwrap(),
            [
                SubnetItem {
                    interface: "eth0".into(),
                    ipv4: Some("subnet-test-ens192".into()),
                    ipv6: None
                },
                SubnetItem {
                    interface: "net1".into(),
                    ipv4: Some("subnet-test-ens224".into()),
                    ipv6: None
                },
            ]
        );
        assert_eq!(a.ip_number, Some(IpNumber::Flexible(1)));
        assert_eq!(a.ip_number.unwrap().desired(2), 3);
        assert_eq!(
            a.subnet_for("net1").unwrap().ipv4.as_deref(),
            Some("subnet-test-ens224")
        );
    }

    #[test]
    fn ip_numbers() {
        assert_eq!(IpNumber::parse("3").unwrap(), IpNumber::Fixed(3));
        assert_eq!(IpNumber::parse("+0").unwrap().desired(5), 5);
        assert_eq!(IpNumber::Flexible(2).to_annotation(), "+2");
        for bad in ["", "+", "++1", "-1", "1.5", "+x", "99999999999"] {
            let err = IpNumber::parse(bad).unwrap_err().to_string();
            assert!(
                err.starts_with("annotation ipam.spidernet.io/ippool-ip-number"),
                "{err}"
            );
        }
    }

    #[test]
    fn malformed_annotations_are_refused_with_the_key() {
        let cases = [
            (
                SUBNETS,
                r#"[{"interface":"eth0","ipv4":["a"]},{"interface":"eth0","ipv4":["b"]}]"#,
                "eth0 is listed twice",
            ),
            (
                SUBNETS,
                r#"[{"interface":"eth0","ipv4":["a"]},{"interface":"net1","ipv4":["a"]}]"#,
                "used by two interfaces",
            ),
            (SUBNETS, r#"[{"interface":"eth0"}]"#, "neither"),
            (
                SUBNETS,
                r#"[{"interface":"eth0","ipv4s":["a"]}]"#,
                "unknown field `ipv4s`",
            ),
            (
                SUBNETS,
                r#"[{"interface":"eth0","ipv4":["a"]},{"ipv4":["b"]}]"#,
                "needs an \"interface\"",
            ),
            (SUBNETS, "[{", "malformed JSON"),
            (
                IPPOOLS,
                r#"[{"interface":"eth0","ipv4":["a"]},{"ipv4":["b"]}]"#,
                "every item names",
            ),
            (
                IPPOOLS,
                r#"[{"interface":"net1","ipv4":["a"]},{"interface":"net1","ipv4":["b"]}]"#,
                "net1 is listed twice",
            ),
            (
                IPPOOL,
                r#"{"interface":"eth0","ipv4":["a"]}"#,
                "takes no \"interface\"",
            ),
            (IPPOOL_RECLAIM, "maybe", "not true or false"),
            (ROUTES, r#"[{"dst":"10.0.0.0/8"}]"#, "missing field `gw`"),
        ];
        for (key, value, want) in cases {
            let err = PodAnnotations::parse(&ann(&[(key, value)]))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(key) && err.contains(want),
                "{key}={value}: {err}"
            );
        }
    }

    #[test]
    fn ippools_by_name_and_by_position() {
        let named = PodAnnotations::parse(&ann(&[(
            IPPOOLS,
            r#"[{"interface":"eth0","ipv4":["a"]},{"interface":"net1","ipv4":["b"],"cleangateway":true}]"#,
        )]))
        .unwrap();
        assert_eq!(named.ippools_for("net1").unwrap().unwrap().ipv4, ["b"]);
        assert_eq!(
            named.ippools_for("net1").unwrap().unwrap().clean_gateway,
            Some(true)
        );
        assert!(
            named
                .ippools_for("net2")
                .unwrap_err()
                .to_string()
                .contains("not net2")
        );
        let positional =
            PodAnnotations::parse(&ann(&[(IPPOOLS, r#"[{"ipv4":["a"]},{"ipv4":["b"]}]"#)]))
                .unwrap();
        assert_eq!(positional.ippools_for("eth0").unwrap().unwrap().ipv4, ["a"]);
        assert_eq!(positional.ippools_for("net1").unwrap().unwrap().ipv4, ["b"]);
        assert!(positional.ippools_for("net2").is_err());
        assert!(
            PodAnnotations::default()
                .ippools_for("eth0")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn multus_networks_map_to_nics() {
        let a = ann(&[
            (MULTUS_DEFAULT_NETWORK, "kube-system/macvlan-conf-ens192"),
            (
                MULTUS_NETWORKS,
                "kube-system/macvlan-conf-ens224, local@ext0",
            ),
        ]);
        let get = |nic| multus_network_for(&a, "default", nic).unwrap();
        assert_eq!(
            get("eth0").as_deref(),
            Some("kube-system/macvlan-conf-ens192")
        );
        assert_eq!(
            get("net1").as_deref(),
            Some("kube-system/macvlan-conf-ens224")
        );
        assert_eq!(get("ext0").as_deref(), Some("default/local"));
        assert_eq!(get("net2"), None);
        let j = ann(&[(
            MULTUS_NETWORKS,
            r#"[{"name":"n","namespace":"x","interface":"net5"},{"name":"m"}]"#,
        )]);
        assert_eq!(
            multus_network_for(&j, "d", "net5").unwrap().as_deref(),
            Some("x/n")
        );
        assert_eq!(
            multus_network_for(&j, "d", "net2").unwrap().as_deref(),
            Some("d/m")
        );
    }

    /// Found by the `annotations` fuzz target: `subnet` took one SpiderSubnet for both IP
    /// versions, which `subnets` refused (as "used by two interfaces").
    #[test]
    fn one_subnet_for_both_ip_versions_is_refused_in_both_forms() {
        for (key, value) in [
            (SUBNET, r#"{"ipv4":["s6"],"ipv6":["s6"]}"#),
            (
                SUBNETS,
                r#"[{"interface":"eth0","ipv4":["s6"],"ipv6":["s6"]}]"#,
            ),
        ] {
            let err = PodAnnotations::parse(&ann(&[(key, value)]))
                .unwrap_err()
                .to_string();
            assert_eq!(
                err,
                format!(
                    "annotation {key}: eth0: SpiderSubnet s6 is named for both IPv4 and IPv6 (a SpiderSubnet has one IP version)"
                )
            );
        }
    }

    #[test]
    fn single_subnet_annotation_defaults_to_eth0() {
        let a =
            PodAnnotations::parse(&ann(&[(SUBNET, r#"{"ipv4":["s4"],"ipv6":["s6"]}"#)])).unwrap();
        let item = a.subnet_for("eth0").unwrap();
        assert_eq!(
            (item.ipv4.as_deref(), item.ipv6.as_deref()),
            (Some("s4"), Some("s6"))
        );
        assert_eq!(nic_index("net3"), Some(3));
        assert_eq!(nic_index("ens1"), None);
    }
}
