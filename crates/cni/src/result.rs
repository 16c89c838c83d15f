//! The ADD result: one version-independent model, read from and written in any version.
//!
//! | field | 0.3.0 / 0.3.1 / 0.4.0 | 1.0.0 | 1.1.0 |
//! |---|---|---|---|
//! | `ips[].version` (`"4"`/`"6"`) | written (from the address) | — | — |
//! | `interfaces[].{name, mac, sandbox}`, `ips[].{address, gateway, interface}`, `routes[].{dst, gw}`, `dns` | ✓ | ✓ | ✓ |
//! | `interfaces[].{mtu, socketPath, pciID}`, `routes[].{mtu, advmss, priority, table, scope}` | — | — | ✓ |
//!
//! Writing ([`CniResult::to_json`]) puts `cniVersion` = the requested version and leaves
//! out what that version does not define. Reading ([`CniResult::parse`]) is lenient the
//! way the Go library is (`ips[].version` is ignored, `null` lists are empty, `""`
//! gateways are absent, a zero `mtu` is unset) and then drops what the result's version
//! does not define, so a parsed value always fits its version. Empty lists and an empty
//! `dns` are omitted from the output.
//!
//! A delegated IPAM plugin returns the abbreviated form: no `interfaces`, no
//! `ips[].interface` — [`CniResult::into_ipam`].

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::de;
use crate::error::Error;
use crate::version::Version;

/// A CNI result (the spec's "Success" object) without its version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniResult {
    /// Interfaces created or touched (none in an IPAM result).
    pub interfaces: Vec<Interface>,
    /// Addresses, each optionally tied to an interface by index.
    pub ips: Vec<IpConfig>,
    /// Routes for the container.
    pub routes: Vec<Route>,
    /// DNS settings.
    pub dns: Dns,
}

/// `interfaces[]` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    /// Interface name (in the sandbox when `sandbox` is set).
    pub name: String,
    /// Hardware address.
    pub mac: Option<String>,
    /// MTU (1.1.0).
    pub mtu: Option<u32>,
    /// Netns path of the sandbox holding the interface; `None` for host interfaces.
    pub sandbox: Option<String>,
    /// Path of a socket file belonging to the interface (1.1.0).
    pub socket_path: Option<String>,
    /// Platform PCI id of the device (1.1.0).
    pub pci_id: Option<String>,
}

/// `ips[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// Address with its prefix length, e.g. `10.6.168.172/16`.
    pub address: IpNet,
    /// Default gateway of the subnet, if any.
    pub gateway: Option<IpAddr>,
    /// Index into [`CniResult::interfaces`].
    pub interface: Option<usize>,
}

impl IpConfig {
    /// An address without gateway or interface.
    pub fn new(address: IpNet) -> Self {
        IpConfig {
            address,
            gateway: None,
            interface: None,
        }
    }
}

/// `routes[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination, e.g. `0.0.0.0/0`.
    pub dst: IpNet,
    /// Next hop; `None` means the runtime picks (usually the address's gateway).
    pub gw: Option<IpAddr>,
    /// Route MTU (1.1.0).
    pub mtu: Option<u32>,
    /// Advertised MSS (1.1.0).
    pub advmss: Option<u32>,
    /// Route metric (1.1.0).
    pub priority: Option<u32>,
    /// Routing table (1.1.0).
    pub table: Option<u32>,
    /// Route scope, e.g. 253 for link (1.1.0).
    pub scope: Option<u8>,
}

impl Route {
    /// A route to `dst` through `gw`, without the 1.1.0 attributes.
    pub fn new(dst: IpNet, gw: Option<IpAddr>) -> Self {
        Route {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }
}

/// `dns` object (also the well-known `dns` key of a network config).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers, in priority order.
    #[serde(
        default,
        deserialize_with = "de::null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub nameservers: Vec<String>,
    /// Local domain for short names.
    #[serde(
        default,
        deserialize_with = "de::non_empty_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub domain: Option<String>,
    /// Search domains, in priority order.
    #[serde(
        default,
        deserialize_with = "de::null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(
        default,
        deserialize_with = "de::null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub options: Vec<String>,
}

impl Dns {
    /// Nothing set (the result then has no `dns` key).
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

impl CniResult {
    /// Reads a result from JSON bytes; see [`CniResult::from_value`].
    pub fn parse(bytes: &[u8], version: Version) -> Result<CniResult, Error> {
        let value: Value = serde_json::from_slice(bytes).map_err(|source| Error::Decode {
            what: "CNI result".into(),
            source,
        })?;
        CniResult::from_value(value, version)
    }

    /// Reads a result from JSON. Its version is its own `cniVersion` when present (code 1
    /// if unsupported), otherwise `version` (for a `prevResult`: the config's).
    pub fn from_value(value: Value, version: Version) -> Result<CniResult, Error> {
        let wire: WireIn = serde_json::from_value(value).map_err(|source| Error::Decode {
            what: "CNI result".into(),
            source,
        })?;
        let version = match wire.cni_version.as_deref() {
            None | Some("") => version,
            Some(v) => v.parse()?,
        };
        let mut result = CniResult {
            interfaces: wire.interfaces.into_iter().map(Into::into).collect(),
            ips: wire.ips.into_iter().map(Into::into).collect(),
            routes: wire.routes.into_iter().map(Into::into).collect(),
            dns: wire.dns,
        };
        result.restrict_to(version);
        Ok(result)
    }

    /// Drops every field `version` does not define (the 1.1.0 route and interface fields
    /// below 1.1.0).
    pub fn restrict_to(&mut self, version: Version) {
        if version.has_v1_1_fields() {
            return;
        }
        for i in &mut self.interfaces {
            i.mtu = None;
            i.socket_path = None;
            i.pci_id = None;
        }
        for r in &mut self.routes {
            r.mtu = None;
            r.advmss = None;
            r.priority = None;
            r.table = None;
            r.scope = None;
        }
    }

    /// The abbreviated result of a delegated IPAM plugin: no interfaces, no
    /// `ips[].interface`.
    pub fn into_ipam(mut self) -> CniResult {
        self.interfaces.clear();
        for ip in &mut self.ips {
            ip.interface = None;
        }
        self
    }

    /// The result written in `version`, as a JSON value.
    pub fn to_value(&self, version: Version) -> Value {
        serde_json::to_value(self.wire(version)).expect("a CNI result always serializes")
    }

    /// The result written in `version`, as the bytes printed on stdout.
    pub fn to_json(&self, version: Version) -> Vec<u8> {
        serde_json::to_vec(&self.wire(version)).expect("a CNI result always serializes")
    }

    fn wire(&self, version: Version) -> WireOut<'_> {
        let v11 = version.has_v1_1_fields();
        WireOut {
            cni_version: version,
            interfaces: self
                .interfaces
                .iter()
                .map(|i| WireInterfaceOut {
                    name: &i.name,
                    mac: i.mac.as_deref(),
                    mtu: i.mtu.filter(|_| v11),
                    sandbox: i.sandbox.as_deref(),
                    socket_path: i.socket_path.as_deref().filter(|_| v11),
                    pci_id: i.pci_id.as_deref().filter(|_| v11),
                })
                .collect(),
            ips: self
                .ips
                .iter()
                .map(|ip| WireIpOut {
                    version: version.has_ip_version_field().then_some(match ip.address {
                        IpNet::V4(_) => "4",
                        IpNet::V6(_) => "6",
                    }),
                    interface: ip.interface,
                    address: ip.address,
                    gateway: ip.gateway,
                })
                .collect(),
            routes: self
                .routes
                .iter()
                .map(|r| WireRouteOut {
                    dst: r.dst,
                    gw: r.gw,
                    mtu: r.mtu.filter(|_| v11),
                    advmss: r.advmss.filter(|_| v11),
                    priority: r.priority.filter(|_| v11),
                    table: r.table.filter(|_| v11),
                    scope: r.scope.filter(|_| v11),
                })
                .collect(),
            dns: &self.dns,
        }
    }
}

#[derive(Serialize)]
struct WireOut<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: Version,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    interfaces: Vec<WireInterfaceOut<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ips: Vec<WireIpOut>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    routes: Vec<WireRouteOut>,
    #[serde(skip_serializing_if = "dns_is_empty")]
    dns: &'a Dns,
}

fn dns_is_empty(dns: &&Dns) -> bool {
    dns.is_empty()
}

#[derive(Serialize)]
struct WireInterfaceOut<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    mac: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtu: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sandbox: Option<&'a str>,
    #[serde(rename = "socketPath", skip_serializing_if = "Option::is_none")]
    socket_path: Option<&'a str>,
    #[serde(rename = "pciID", skip_serializing_if = "Option::is_none")]
    pci_id: Option<&'a str>,
}

#[derive(Serialize)]
struct WireIpOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interface: Option<usize>,
    address: IpNet,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway: Option<IpAddr>,
}

#[derive(Serialize)]
struct WireRouteOut {
    dst: IpNet,
    #[serde(skip_serializing_if = "Option::is_none")]
    gw: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtu: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    advmss: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    table: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<u8>,
}

#[derive(Deserialize)]
struct WireIn {
    #[serde(rename = "cniVersion", default)]
    cni_version: Option<String>,
    #[serde(default, deserialize_with = "de::null_default")]
    interfaces: Vec<WireInterfaceIn>,
    #[serde(default, deserialize_with = "de::null_default")]
    ips: Vec<WireIpIn>,
    #[serde(default, deserialize_with = "de::null_default")]
    routes: Vec<WireRouteIn>,
    #[serde(default, deserialize_with = "de::null_default")]
    dns: Dns,
}

#[derive(Deserialize)]
struct WireInterfaceIn {
    #[serde(default, deserialize_with = "de::null_default")]
    name: String,
    #[serde(default, deserialize_with = "de::non_empty_string")]
    mac: Option<String>,
    #[serde(default, deserialize_with = "de::non_zero")]
    mtu: Option<u32>,
    #[serde(default, deserialize_with = "de::non_empty_string")]
    sandbox: Option<String>,
    #[serde(
        rename = "socketPath",
        default,
        deserialize_with = "de::non_empty_string"
    )]
    socket_path: Option<String>,
    #[serde(rename = "pciID", default, deserialize_with = "de::non_empty_string")]
    pci_id: Option<String>,
}

impl From<WireInterfaceIn> for Interface {
    fn from(w: WireInterfaceIn) -> Self {
        Interface {
            name: w.name,
            mac: w.mac,
            mtu: w.mtu,
            sandbox: w.sandbox,
            socket_path: w.socket_path,
            pci_id: w.pci_id,
        }
    }
}

/// `version` (0.x) is accepted and ignored: the address says the family.
#[derive(Deserialize)]
struct WireIpIn {
    address: IpNet,
    #[serde(default, deserialize_with = "de::optional_ip")]
    gateway: Option<IpAddr>,
    #[serde(default)]
    interface: Option<usize>,
}

impl From<WireIpIn> for IpConfig {
    fn from(w: WireIpIn) -> Self {
        IpConfig {
            address: w.address,
            gateway: w.gateway,
            interface: w.interface,
        }
    }
}

#[derive(Deserialize)]
struct WireRouteIn {
    dst: IpNet,
    #[serde(default, deserialize_with = "de::optional_ip")]
    gw: Option<IpAddr>,
    #[serde(default, deserialize_with = "de::non_zero")]
    mtu: Option<u32>,
    #[serde(default, deserialize_with = "de::non_zero")]
    advmss: Option<u32>,
    #[serde(default, deserialize_with = "de::non_zero")]
    priority: Option<u32>,
    #[serde(default)]
    table: Option<u32>,
    #[serde(default)]
    scope: Option<u8>,
}

impl From<WireRouteIn> for Route {
    fn from(w: WireRouteIn) -> Self {
        Route {
            dst: w.dst,
            gw: w.gw,
            mtu: w.mtu,
            advmss: w.advmss,
            priority: w.priority,
            table: w.table,
            scope: w.scope,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::SUPPORTED;
    use serde_json::json;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A result using every field, as a 1.1.0 plugin would produce it.
    fn full() -> CniResult {
        CniResult {
            interfaces: vec![Interface {
                name: "net1".into(),
                mac: Some("02:42:0a:07:a8:ad".into()),
                mtu: Some(1500),
                sandbox: Some("/var/run/netns/pod1".into()),
                socket_path: Some("/run/vhost.sock".into()),
                pci_id: Some("0000:00:1f.6".into()),
            }],
            ips: vec![
                IpConfig {
                    address: net("10.7.168.173/16"),
                    gateway: Some(ip("10.7.0.1")),
                    interface: Some(0),
                },
                IpConfig {
                    address: net("fd00:7::a8ad/64"),
                    gateway: None,
                    interface: Some(0),
                },
            ],
            routes: vec![
                Route {
                    dst: net("0.0.0.0/0"),
                    gw: Some(ip("10.7.0.1")),
                    mtu: Some(1400),
                    advmss: Some(1360),
                    priority: Some(100),
                    table: Some(101),
                    scope: Some(0),
                },
                Route::new(net("10.96.0.0/12"), None),
            ],
            dns: Dns {
                nameservers: vec!["10.96.0.10".into()],
                domain: None,
                search: vec!["svc.cluster.local".into()],
                options: vec![],
            },
        }
    }

    fn expected_v0(version: &str) -> Value {
        json!({
            "cniVersion": version,
            "interfaces": [{"name": "net1", "mac": "02:42:0a:07:a8:ad", "sandbox": "/var/run/netns/pod1"}],
            "ips": [
                {"version": "4", "interface": 0, "address": "10.7.168.173/16", "gateway": "10.7.0.1"},
                {"version": "6", "interface": 0, "address": "fd00:7::a8ad/64"}
            ],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.7.0.1"}, {"dst": "10.96.0.0/12"}],
            "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]}
        })
    }

    #[test]
    fn renders_0_3_x_and_0_4_0_with_ip_version() {
        for v in [Version::V0_3_0, Version::V0_3_1, Version::V0_4_0] {
            assert_eq!(full().to_value(v), expected_v0(v.as_str()), "{v}");
        }
    }

    #[test]
    fn renders_1_0_0_without_ip_version_or_1_1_fields() {
        assert_eq!(
            full().to_value(Version::V1_0_0),
            json!({
                "cniVersion": "1.0.0",
                "interfaces": [{"name": "net1", "mac": "02:42:0a:07:a8:ad", "sandbox": "/var/run/netns/pod1"}],
                "ips": [
                    {"interface": 0, "address": "10.7.168.173/16", "gateway": "10.7.0.1"},
                    {"interface": 0, "address": "fd00:7::a8ad/64"}
                ],
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.7.0.1"}, {"dst": "10.96.0.0/12"}],
                "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]}
            })
        );
    }

    #[test]
    fn renders_1_1_0_with_everything() {
        assert_eq!(
            full().to_value(Version::V1_1_0),
            json!({
                "cniVersion": "1.1.0",
                "interfaces": [{
                    "name": "net1", "mac": "02:42:0a:07:a8:ad", "mtu": 1500,
                    "sandbox": "/var/run/netns/pod1", "socketPath": "/run/vhost.sock",
                    "pciID": "0000:00:1f.6"
                }],
                "ips": [
                    {"interface": 0, "address": "10.7.168.173/16", "gateway": "10.7.0.1"},
                    {"interface": 0, "address": "fd00:7::a8ad/64"}
                ],
                "routes": [
                    {"dst": "0.0.0.0/0", "gw": "10.7.0.1", "mtu": 1400, "advmss": 1360,
                     "priority": 100, "table": 101, "scope": 0},
                    {"dst": "10.96.0.0/12"}
                ],
                "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]}
            })
        );
    }

    #[test]
    fn ipam_result_is_abbreviated_and_empty_parts_are_omitted() {
        let r = full();
        let ipam = CniResult {
            dns: Dns::default(),
            ..r
        }
        .into_ipam();
        assert_eq!(
            ipam.to_value(Version::V0_3_1),
            json!({
                "cniVersion": "0.3.1",
                "ips": [
                    {"version": "4", "address": "10.7.168.173/16", "gateway": "10.7.0.1"},
                    {"version": "6", "address": "fd00:7::a8ad/64"}
                ],
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.7.0.1"}, {"dst": "10.96.0.0/12"}]
            })
        );
        assert_eq!(
            CniResult::default().to_value(Version::V1_0_0),
            json!({"cniVersion": "1.0.0"})
        );
    }

    #[test]
    fn round_trips_in_every_version() {
        for v in SUPPORTED {
            let mut expected = full();
            expected.restrict_to(v);
            let back = CniResult::parse(&full().to_json(v), Version::V0_3_0).unwrap();
            assert_eq!(back, expected, "{v}");
        }
    }

    #[test]
    fn converts_between_versions() {
        // What Debian's macvlan 1.1.1 prints for a 0.3.1 config.
        let macvlan = br#"{
            "cniVersion": "0.3.1",
            "interfaces": [{"name": "net1", "mac": "aa:bb:cc:dd:ee:ff", "sandbox": "/var/run/netns/t"}],
            "ips": [{"version": "4", "interface": 0, "address": "10.7.168.173/16", "gateway": "10.7.0.1"}],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {}
        }"#;
        let r = CniResult::parse(macvlan, Version::V1_1_0).unwrap();
        assert_eq!(r.ips[0].address, net("10.7.168.173/16"));
        assert_eq!(r.ips[0].interface, Some(0));
        assert!(r.dns.is_empty());
        let up = r.to_value(Version::V1_0_0);
        assert_eq!(
            up["ips"],
            json!([{"interface": 0, "address": "10.7.168.173/16", "gateway": "10.7.0.1"}])
        );
        let up_bytes = r.to_json(Version::V1_1_0);
        let down = CniResult::parse(&up_bytes, Version::V1_1_0)
            .unwrap()
            .to_value(Version::V0_3_1);
        let mut original: Value = serde_json::from_slice(macvlan).unwrap();
        original.as_object_mut().unwrap().remove("dns");
        assert_eq!(down, original);
    }

    #[test]
    fn parsing_an_old_version_drops_1_1_fields() {
        let r = CniResult::from_value(
            json!({
                "routes": [{"dst": "0.0.0.0/0", "mtu": 1400, "table": 100}],
                "interfaces": [{"name": "eth0", "pciID": "x"}]
            }),
            Version::V0_4_0,
        )
        .unwrap();
        assert_eq!(r.routes[0], Route::new(net("0.0.0.0/0"), None));
        assert_eq!(r.interfaces[0].pci_id, None);
        // The result's own cniVersion wins over the default.
        let r = CniResult::from_value(
            json!({"cniVersion": "1.1.0", "routes": [{"dst": "0.0.0.0/0", "mtu": 1400}]}),
            Version::V0_4_0,
        )
        .unwrap();
        assert_eq!(r.routes[0].mtu, Some(1400));
    }

    #[test]
    fn lenient_input() {
        let r = CniResult::from_value(
            json!({
                "cniVersion": "1.0.0",
                "interfaces": null,
                "ips": [{"version": "4", "address": "10.0.0.2/24", "gateway": ""}],
                "routes": [{"dst": "::/0", "gw": "fd00::1", "mtu": 0}],
                "dns": null
            }),
            Version::V1_0_0,
        )
        .unwrap();
        assert_eq!(r.ips, vec![IpConfig::new(net("10.0.0.2/24"))]);
        assert_eq!(r.routes[0].gw, Some(ip("fd00::1")));
        assert_eq!(r.routes[0].mtu, None);
    }

    #[test]
    fn bad_results_are_refused() {
        let err = CniResult::parse(b"not json", Version::V1_0_0).unwrap_err();
        assert_eq!(err.code(), 6);
        let err = CniResult::from_value(
            json!({"ips": [{"address": "10.0.0.300/24"}]}),
            Version::V1_0_0,
        )
        .unwrap_err();
        assert_eq!(err.code(), 6);
        let err =
            CniResult::from_value(json!({"cniVersion": "9.9.9"}), Version::V1_0_0).unwrap_err();
        assert_eq!(err.code(), 1);
    }
}
