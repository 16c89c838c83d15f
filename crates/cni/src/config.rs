//! The network configuration a plugin reads on stdin.
//!
//! The runtime sends one plugin's object of the network config list, with `cniVersion` and
//! `name` injected, plus `prevResult`, `runtimeConfig`, `args` and the `cni.dev/*` keys it
//! adds. A delegating plugin (macvlan) forwards its complete config to the IPAM plugin,
//! so an IPAM plugin sees macvlan's keys too. [`NetworkConfig`] types the keys the spec
//! defines and keeps the whole object ([`NetworkConfig::raw`]); a plugin reads its own keys
//! with [`NetworkConfig::plugin_keys`], an IPAM plugin its `ipam` keys with
//! [`NetworkConfig::ipam_keys`].
//!
//! Checks, in order (the Go skeleton's, then ours):
//!
//! 1. stdin is a JSON object — else code 6;
//! 2. `name` is present and non-empty — else code 7 `missing network name`; it follows
//!    the spec's character rule — else code 7;
//! 3. `cniVersion` is one of [`SUPPORTED`](crate::SUPPORTED) — else code 1 listing them
//!    (a config without `cniVersion` is refused the same way: the Go library reads it as
//!    0.1.0, which no Berth plugin speaks);
//! 4. the command is allowed at that version ([`Command::check_version`]) — else code 1;
//! 5. the typed keys decode — else code 6. On DEL only, a `prevResult` that does not
//!    decode is dropped with a warning instead, because DEL must be best effort.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::command::Command;
use crate::de;
use crate::env::is_cni_identifier;
use crate::error::Error;
use crate::result::{CniResult, Dns};
use crate::version::Version;

/// GC key for the attachments that are still valid (SPEC.md at HEAD; libcni sends it).
pub const VALID_ATTACHMENTS_KEY: &str = "cni.dev/valid-attachments";
/// The same list under the name of the spec-v1.1.0 tag (libcni sends both).
pub const ATTACHMENTS_KEY: &str = "cni.dev/attachments";

/// One still-valid attachment in a GC request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GcAttachment {
    /// `CNI_CONTAINERID` of the ADD.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// `CNI_IFNAME` of the ADD.
    pub ifname: String,
}

/// A plugin's network configuration, as read from stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// `cniVersion`: the version results and errors are written in.
    pub cni_version: Version,
    /// `name`: the network's name.
    pub name: String,
    /// `type`: the plugin's binary name (absent only from hand-written configs).
    pub plugin_type: Option<String>,
    /// `ipam`, as given: an IPAM plugin reads its keys with [`NetworkConfig::ipam_keys`].
    pub ipam: Option<Map<String, Value>>,
    /// `dns` (well-known key).
    pub dns: Option<Dns>,
    /// `prevResult`, read at the config's version unless it names its own.
    pub prev_result: Option<CniResult>,
    /// `runtimeConfig`, as given.
    pub runtime_config: Option<Value>,
    /// `args`, as given.
    pub args: Option<Value>,
    /// GC: `cni.dev/valid-attachments`, or `cni.dev/attachments` when only that is sent.
    /// `None` when neither key is present: a GC handler must then release nothing, since
    /// "no list" is not "no valid attachment". A JSON `null` is an empty list (Go sends
    /// `null` for an empty slice).
    pub valid_attachments: Option<Vec<GcAttachment>>,
    raw: Map<String, Value>,
}

/// The keys this layer types, read from the raw object in one pass.
#[derive(Deserialize)]
struct Known {
    #[serde(rename = "type", default, deserialize_with = "de::non_empty_string")]
    plugin_type: Option<String>,
    #[serde(default)]
    ipam: Option<Map<String, Value>>,
    #[serde(default)]
    dns: Option<Dns>,
    #[serde(rename = "runtimeConfig", default)]
    runtime_config: Option<Value>,
    #[serde(default)]
    args: Option<Value>,
    #[serde(
        rename = "cni.dev/valid-attachments",
        default,
        deserialize_with = "de::present"
    )]
    valid_attachments: Option<Option<Vec<GcAttachment>>>,
    #[serde(
        rename = "cni.dev/attachments",
        default,
        deserialize_with = "de::present"
    )]
    attachments: Option<Option<Vec<GcAttachment>>>,
}

impl NetworkConfig {
    /// Reads a config for any command (checks 1–3 and 5 of the [module docs](self)).
    pub fn parse(stdin: &[u8]) -> Result<NetworkConfig, Error> {
        NetworkConfig::parse_inner(stdin, None)
    }

    /// Reads a config for `command`: all checks of the [module docs](self), including the
    /// version gate and DEL's tolerance of a broken `prevResult`.
    pub fn parse_for(command: Command, stdin: &[u8]) -> Result<NetworkConfig, Error> {
        NetworkConfig::parse_inner(stdin, Some(command))
    }

    fn parse_inner(stdin: &[u8], command: Option<Command>) -> Result<NetworkConfig, Error> {
        let decode = |what: &str| {
            let what = what.to_owned();
            move |source| Error::Decode { what, source }
        };
        let raw: Map<String, Value> =
            serde_json::from_slice(stdin).map_err(decode("network config"))?;

        let name = match raw.get("name") {
            None | Some(Value::Null) => return Err(Error::MissingNetworkName),
            Some(v) => String::deserialize(v).map_err(decode("network config name"))?,
        };
        if name.is_empty() {
            return Err(Error::MissingNetworkName);
        }
        if !is_cni_identifier(&name) {
            return Err(Error::InvalidNetworkName(name));
        }

        let cni_version: Version = match raw.get("cniVersion") {
            None | Some(Value::Null) => {
                return Err(Error::IncompatibleVersion { requested: None });
            }
            Some(v) => String::deserialize(v)
                .map_err(decode("network config cniVersion"))?
                .parse()?,
        };
        if let Some(command) = command {
            command.check_version(cni_version)?;
        }

        let known =
            Known::deserialize(Value::Object(raw.clone())).map_err(decode("network config"))?;

        let prev_result = match raw.get("prevResult") {
            None | Some(Value::Null) => None,
            Some(v) => match CniResult::from_value(v.clone(), cni_version) {
                Ok(r) => Some(r),
                Err(err) if command == Some(Command::Del) => {
                    tracing::warn!(error = %err, "ignoring a prevResult that does not decode on DEL");
                    None
                }
                Err(err) => return Err(err),
            },
        };

        let valid_attachments = known
            .valid_attachments
            .or(known.attachments)
            .map(Option::unwrap_or_default);

        Ok(NetworkConfig {
            cni_version,
            name,
            plugin_type: known.plugin_type,
            ipam: known.ipam,
            dns: known.dns,
            prev_result,
            runtime_config: known.runtime_config,
            args: known.args,
            valid_attachments,
            raw,
        })
    }

    /// The whole config object as received (unknown keys included), e.g. to pass it on.
    pub fn raw(&self) -> &Map<String, Value> {
        &self.raw
    }

    /// One raw key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.raw.get(key)
    }

    /// Decodes a plugin's own keys from the whole config object. `T` names the keys it
    /// wants (serde ignores the others unless `T` says `deny_unknown_fields`); a decoding
    /// failure is code 6 naming `T`.
    ///
    /// ```
    /// # use berth_cni::NetworkConfig;
    /// #[derive(serde::Deserialize)]
    /// struct Veth {
    ///     #[serde(default)]
    ///     service_cidr: Vec<ipnet::IpNet>,
    /// }
    /// let config = NetworkConfig::parse(
    ///     br#"{"cniVersion":"0.3.1","name":"n","type":"veth","service_cidr":["10.96.0.0/12"]}"#,
    /// )?;
    /// let veth: Veth = config.plugin_keys()?;
    /// assert_eq!(veth.service_cidr, vec!["10.96.0.0/12".parse::<ipnet::IpNet>()?]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn plugin_keys<T: DeserializeOwned>(&self) -> Result<T, Error> {
        T::deserialize(Value::Object(self.raw.clone())).map_err(|source| Error::Decode {
            what: format!("plugin config ({})", std::any::type_name::<T>()),
            source,
        })
    }

    /// The `ipam` object's `type`: the IPAM plugin's name (`host-local`, `spiderpool`).
    pub fn ipam_type(&self) -> Option<&str> {
        self.ipam.as_ref()?.get("type")?.as_str()
    }

    /// Decodes the `ipam` object as an IPAM plugin's keys; `None` when the config has none. A
    /// decoding failure is code 6 naming `T`.
    ///
    /// ```
    /// # use berth_cni::NetworkConfig;
    /// #[derive(serde::Deserialize)]
    /// struct HostLocal {
    ///     ranges: Vec<Vec<serde_json::Value>>,
    /// }
    /// let config = NetworkConfig::parse(
    ///     br#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local","ranges":[[]]}}"#,
    /// )?;
    /// assert_eq!(config.ipam_type(), Some("host-local"));
    /// let ipam: HostLocal = config.ipam_keys()?.expect("the config has an ipam object");
    /// assert_eq!(ipam.ranges.len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn ipam_keys<T: DeserializeOwned>(&self) -> Result<Option<T>, Error> {
        self.ipam
            .as_ref()
            .map(|ipam| {
                T::deserialize(Value::Object(ipam.clone())).map_err(|source| Error::Decode {
                    what: format!("ipam config ({})", std::any::type_name::<T>()),
                    source,
                })
            })
            .transpose()
    }
}

/// The `ipam` object of a config on stdin as `T`, read leniently and before any check: `None`
/// when stdin is not a JSON object or has no `ipam` that reads as `T`. For setting up logging
/// before the config is validated ([`Plugin::prepare`](crate::Plugin::prepare)), so that a
/// refused config is still logged where it asks.
pub fn peek_ipam<T: DeserializeOwned>(stdin: &[u8]) -> Option<T> {
    #[derive(Deserialize)]
    struct Peek {
        ipam: Option<Value>,
    }
    let ipam = serde_json::from_slice::<Peek>(stdin).ok()?.ipam?;
    T::deserialize(ipam).ok()
}

/// The config's `cniVersion` if stdin is an object naming a supported one. Used to write
/// an error in the request's version even when the config itself is refused.
pub(crate) fn peek_version(stdin: &[u8]) -> Option<Version> {
    #[derive(Deserialize)]
    struct Peek {
        #[serde(rename = "cniVersion")]
        cni_version: String,
    }
    let peek: Peek = serde_json::from_slice(stdin).ok()?;
    peek.cni_version.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<NetworkConfig, Error> {
        NetworkConfig::parse(&serde_json::to_vec(&v).unwrap())
    }

    #[test]
    fn the_ipam_object_is_kept_for_the_ipam_plugin() {
        let c = parse(json!({
            "cniVersion": "0.3.1", "name": "macvlan-conf-ens192", "type": "macvlan",
            "master": "ens192",
            "ipam": {"type": "spiderpool", "clean_gateway": true, "log_file_max_size": 100}
        }))
        .unwrap();
        assert_eq!(c.cni_version, Version::V0_3_1);
        assert_eq!(c.plugin_type.as_deref(), Some("macvlan"));
        assert_eq!(c.ipam_type(), Some("spiderpool"));
        #[derive(Deserialize, Debug, PartialEq)]
        struct Keys {
            clean_gateway: bool,
        }
        assert_eq!(
            c.ipam_keys::<Keys>().unwrap(),
            Some(Keys {
                clean_gateway: true
            })
        );
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct Wrong {
            clean_gateway: String,
        }
        assert_eq!(c.ipam_keys::<Wrong>().unwrap_err().code(), 6);
        // Unknown top-level keys stay available.
        assert_eq!(c.get("master"), Some(&json!("ens192")));
        assert_eq!(c.raw().len(), 5);
        assert_eq!(c.prev_result, None);
        assert_eq!(c.valid_attachments, None);
        let bare = parse(json!({"cniVersion": "1.0.0", "name": "n"})).unwrap();
        assert_eq!(bare.ipam_keys::<Keys>().unwrap(), None);
    }

    #[test]
    fn name_rules() {
        let err = parse(json!({"cniVersion": "1.0.0"})).unwrap_err();
        assert_eq!(
            (err.code(), err.to_string()),
            (7, "missing network name".into())
        );
        assert_eq!(
            parse(json!({"cniVersion": "1.0.0", "name": ""}))
                .unwrap_err()
                .code(),
            7
        );
        assert_eq!(
            parse(json!({"cniVersion": "1.0.0", "name": "../x"}))
                .unwrap_err()
                .code(),
            7
        );
        assert_eq!(
            parse(json!({"cniVersion": "1.0.0", "name": 5}))
                .unwrap_err()
                .code(),
            6
        );
    }

    #[test]
    fn version_rules() {
        for v in ["9.9.9", "1.2.0", "0.2.0"] {
            let err = parse(json!({"cniVersion": v, "name": "n"})).unwrap_err();
            assert_eq!(err.code(), 1, "{v}");
            assert!(err.details().contains("\"1.1.0\""));
        }
        let err = parse(json!({"name": "n"})).unwrap_err();
        assert_eq!(err.code(), 1);
        assert!(err.details().starts_with("config has no cniVersion"));
        assert_eq!(
            parse(json!({"cniVersion": 1, "name": "n"}))
                .unwrap_err()
                .code(),
            6
        );

        let cfg = br#"{"cniVersion":"0.3.1","name":"n"}"#;
        assert_eq!(
            NetworkConfig::parse_for(Command::Check, cfg)
                .unwrap_err()
                .code(),
            1
        );
        assert_eq!(
            NetworkConfig::parse_for(Command::Gc, cfg)
                .unwrap_err()
                .code(),
            1
        );
        NetworkConfig::parse_for(Command::Add, cfg).unwrap();
    }

    #[test]
    fn garbage_is_a_decode_error() {
        for bad in [&b"not json"[..], b"", b"[1,2]", b"\"str\"", b"{\"name\":"] {
            let err = NetworkConfig::parse(bad).unwrap_err();
            assert_eq!(err.code(), 6, "{:?}", String::from_utf8_lossy(bad));
        }
        let err =
            parse(json!({"cniVersion": "1.0.0", "name": "n", "ipam": "host-local"})).unwrap_err();
        assert_eq!(err.code(), 6, "ipam must be an object");
    }

    #[test]
    fn gc_attachments_under_both_keys() {
        let list = json!([{"containerID": "c1", "ifname": "eth0"}, {"containerID": "c2", "ifname": "net1"}]);
        let expected = vec![
            GcAttachment {
                container_id: "c1".into(),
                ifname: "eth0".into(),
            },
            GcAttachment {
                container_id: "c2".into(),
                ifname: "net1".into(),
            },
        ];
        for key in [VALID_ATTACHMENTS_KEY, ATTACHMENTS_KEY] {
            let c = parse(json!({"cniVersion": "1.1.0", "name": "n", key: list})).unwrap();
            assert_eq!(c.valid_attachments.as_ref(), Some(&expected), "{key}");
        }
        // Both: the HEAD name wins.
        let c = parse(json!({
            "cniVersion": "1.1.0", "name": "n",
            VALID_ATTACHMENTS_KEY: [{"containerID": "c1", "ifname": "eth0"}],
            ATTACHMENTS_KEY: [{"containerID": "old", "ifname": "eth0"}]
        }))
        .unwrap();
        assert_eq!(c.valid_attachments.unwrap()[0].container_id, "c1");
        // null is an empty list; absence is "no list".
        let c = parse(json!({"cniVersion": "1.1.0", "name": "n", VALID_ATTACHMENTS_KEY: null}))
            .unwrap();
        assert_eq!(c.valid_attachments, Some(vec![]));
    }

    #[test]
    fn prev_result_is_typed_at_the_config_version() {
        let c = parse(json!({
            "cniVersion": "0.4.0", "name": "n", "type": "veth",
            "prevResult": {
                "cniVersion": "0.4.0",
                "interfaces": [{"name": "net1", "sandbox": "/var/run/netns/p"}],
                "ips": [{"version": "4", "interface": 0, "address": "10.7.168.173/16", "gateway": "10.7.0.1"}],
                "routes": [{"dst": "0.0.0.0/0", "mtu": 1400}]
            },
            "runtimeConfig": {"mac": "aa"},
            "args": {"cni": {"ips": ["10.7.168.173"]}}
        }))
        .unwrap();
        let prev = c.prev_result.unwrap();
        assert_eq!(prev.ips[0].address.to_string(), "10.7.168.173/16");
        assert_eq!(prev.routes[0].mtu, None, "0.4.0 has no route mtu");
        assert_eq!(c.runtime_config, Some(json!({"mac": "aa"})));
        assert_eq!(c.args, Some(json!({"cni": {"ips": ["10.7.168.173"]}})));
    }

    #[test]
    fn broken_prev_result_fails_add_but_not_del() {
        let cfg =
            br#"{"cniVersion":"1.0.0","name":"n","prevResult":{"ips":[{"address":"bogus"}]}}"#;
        assert_eq!(
            NetworkConfig::parse_for(Command::Add, cfg)
                .unwrap_err()
                .code(),
            6
        );
        let c = NetworkConfig::parse_for(Command::Del, cfg).unwrap();
        assert_eq!(c.prev_result, None);
        assert!(c.get("prevResult").is_some());
    }

    #[test]
    fn plugin_keys_read_chained_config() {
        #[derive(Deserialize, Debug, PartialEq)]
        struct Route {
            #[serde(default)]
            service_cidr: Vec<String>,
            #[serde(rename = "podDefaultRouteNic", default)]
            pod_default_route_nic: Option<String>,
        }
        let c = parse(json!({
            "cniVersion": "0.3.1", "name": "n", "type": "veth",
            "service_cidr": ["10.96.0.0/12"], "podDefaultRouteNic": "net1"
        }))
        .unwrap();
        assert_eq!(
            c.plugin_keys::<Route>().unwrap(),
            Route {
                service_cidr: vec!["10.96.0.0/12".into()],
                pod_default_route_nic: Some("net1".into())
            }
        );
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct Strict {
            service_cidr: u32,
        }
        assert_eq!(c.plugin_keys::<Strict>().unwrap_err().code(), 6);
    }

    #[test]
    fn peeks_the_ipam_object() {
        #[derive(Deserialize, Debug, PartialEq)]
        struct Logging {
            log_file_path: Option<String>,
        }
        let ipam: Logging = peek_ipam(
            br#"{"cniVersion":"9.9.9","ipam":{"type":"spiderpool","log_file_path":"/tmp/x.log"}}"#,
        )
        .unwrap();
        assert_eq!(ipam.log_file_path.as_deref(), Some("/tmp/x.log"));
        assert_eq!(peek_ipam::<Logging>(b"garbage"), None);
        assert_eq!(peek_ipam::<Logging>(br#"{"name":"n"}"#), None);
        assert_eq!(
            peek_ipam::<Logging>(br#"{"ipam":{"log_file_path":5}}"#),
            None
        );
    }

    #[test]
    fn peeks_the_version_for_error_results() {
        assert_eq!(
            peek_version(br#"{"cniVersion":"0.3.1"}"#),
            Some(Version::V0_3_1)
        );
        assert_eq!(peek_version(br#"{"cniVersion":"9.9.9"}"#), None);
        assert_eq!(peek_version(b"garbage"), None);
    }
}
