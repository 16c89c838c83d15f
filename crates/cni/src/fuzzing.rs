//! Property checks for the fuzz targets in `fuzz/`, shared with the corpus replay tests.
//!
//! Each `check_*` function takes one raw fuzz input, decodes it in a small text format (so
//! the seed corpora stay readable), runs the parsers on it and asserts properties: refused
//! input is an [`Error`] with a known code whose `Display`, `details` and wire form work,
//! accepted input survives a render → parse round trip, and the entry points agree with
//! each other. A failed property panics — that is how libFuzzer sees a finding; valid or
//! invalid input never does.
//!
//! The fuzz targets (`fuzz/fuzz_targets/{cni_config,cni_result}.rs`) call these functions
//! (through `cni_plugin::fuzzing`, which adds the checks of Berth's own keys), and the corpus
//! replay tests run every file of `fuzz/corpus/<target>/` through them, so CI runs the corpora
//! as ordinary tests. Behind the `fuzzing` feature; not part of the API.

use std::collections::HashMap;

use serde_json::Value;

use crate::args::{
    CniArgs, K8S_POD_INFRA_CONTAINER_ID, K8S_POD_NAME, K8S_POD_NAMESPACE, K8S_POD_UID,
};
use crate::command::Command;
use crate::config::{NetworkConfig, peek_version};
use crate::env::{CNI_ARGS, Env, is_cni_identifier};
use crate::error::{CniError, Error, code};
use crate::plugin::{AttachmentRequest, Invocation, Plugin, run_with};
use crate::result::{CniResult, Dns, IpConfig};
use crate::version::{SUPPORTED, Version};

const COMMANDS: [Command; 6] = [
    Command::Add,
    Command::Del,
    Command::Check,
    Command::Version,
    Command::Gc,
    Command::Status,
];

/// Checks an error's code, message, details and wire form (which must read back).
pub fn check_error(err: &Error, codes: &[u32]) {
    assert!(
        codes.contains(&err.code()),
        "code {} not in {codes:?}: {err:?}",
        err.code()
    );
    assert!(!err.to_string().is_empty(), "{err:?} has no message");
    let _ = err.details();
    let cni = err.to_cni_error();
    assert_eq!(
        (cni.code, cni.msg.as_str()),
        (err.code(), &*err.to_string())
    );
    for v in SUPPORTED {
        let wire = cni.to_json(v);
        let back: CniError = serde_json::from_slice(&wire)
            .unwrap_or_else(|e| panic!("error result does not read back: {e}"));
        assert_eq!(back, cni);
        let _ = back.to_string();
    }
}

/// The codes a config on stdin can be refused with: incompatible version, decode, invalid.
const CONFIG_CODES: [u32; 3] = [
    code::INCOMPATIBLE_VERSION,
    code::DECODE,
    code::INVALID_CONFIG,
];

// ---------------------------------------------------------------------------------------
// CNI config, CNI_ARGS and the whole invocation
// ---------------------------------------------------------------------------------------

/// Fuzz target `cni_config`. Input: `NAME=VALUE` lines (the `CNI_*` environment), an empty
/// line, then stdin (the network config); input without an empty line is all stdin. Checks
/// `NetworkConfig::parse` and `parse_for` for every command (round trip through the raw
/// object, IPAM keys through serde, the version gate), `CniArgs::parse` of `CNI_ARGS`
/// (round trip through a rendering), and `Invocation::parse` / `run_with` against the
/// parts they are made of.
pub fn check_cni_config(data: &[u8]) {
    check_cni_config_with(data, &[]);
}

/// [`check_cni_config`] for a plugin that reads `args_keys` of `CNI_ARGS` itself.
pub fn check_cni_config_with(data: &[u8], args_keys: &[&str]) {
    let (env, stdin) = split_input(data);
    let parsed = check_config(stdin);
    for command in COMMANDS {
        check_config_for(command, stdin, &parsed);
    }
    if let Some(args) = env.get(CNI_ARGS) {
        check_args(args, args_keys);
    }
    check_invocation(&env, stdin, args_keys);
}

/// The `CNI_*` environment and stdin of a `cni_config` input.
pub fn split_input(data: &[u8]) -> (HashMap<String, String>, &[u8]) {
    let Some(at) = data.windows(2).position(|w| w == b"\n\n") else {
        return (HashMap::new(), data);
    };
    let env = String::from_utf8_lossy(&data[..at])
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    (env, &data[at + 2..])
}

fn check_config(stdin: &[u8]) -> Option<NetworkConfig> {
    let config = match NetworkConfig::parse(stdin) {
        Ok(c) => c,
        Err(err) => {
            check_error(&err, &CONFIG_CODES);
            return None;
        }
    };
    assert!(
        !config.name.is_empty() && is_cni_identifier(&config.name),
        "{:?}",
        config.name
    );
    assert_eq!(
        config.get("name"),
        Some(&Value::String(config.name.clone()))
    );
    assert_eq!(
        config.get("cniVersion"),
        Some(&Value::String(config.cni_version.to_string()))
    );
    let has_list = config.get(crate::config::VALID_ATTACHMENTS_KEY).is_some()
        || config.get(crate::config::ATTACHMENTS_KEY).is_some();
    assert_eq!(config.valid_attachments.is_some(), has_list);
    if let Some(prev) = &config.prev_result {
        // It was read in its own version (or the config's), and holds nothing more.
        let raw_prev = config.get("prevResult").expect("prevResult is there");
        let mut fits = prev.clone();
        fits.restrict_to(effective_version(raw_prev, config.cni_version));
        assert_eq!(
            &fits, prev,
            "prevResult holds fields its version does not define"
        );
    }

    // The raw object is the whole config: it parses back to the same config.
    let raw = serde_json::to_vec(config.raw()).expect("a JSON object serializes");
    match NetworkConfig::parse(&raw) {
        Ok(back) => {
            if back != config {
                assert!(same_config(&back, &config), "raw → parse differs: {back:?}");
            }
        }
        Err(err) => panic!("the raw object of an accepted config is refused: {err}"),
    }
    // The typed parts write back what they read.
    assert_eq!(
        config.ipam_type(),
        config.ipam.as_ref().and_then(|i| i.get("type")?.as_str())
    );
    if let Some(dns) = &config.dns {
        let value = serde_json::to_value(dns).expect("dns serializes");
        let back: Dns = serde_json::from_value(value).expect("dns reads back");
        assert_eq!(&back, dns);
    }
    if let Some(list) = &config.valid_attachments {
        let value = serde_json::to_value(list).expect("attachments serialize");
        assert_eq!(
            serde_json::from_value::<Vec<crate::GcAttachment>>(value)
                .ok()
                .as_ref(),
            Some(list)
        );
    }
    Some(config)
}

/// JSON equality with floats compared within a few ULP: serde_json (without its
/// `float_roundtrip` feature) may read a float of more than 17 significant digits 1 ULP off,
/// so writing it and reading it back can move it (fuzz/README.md, finding 2).
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() && y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => (x - y).abs() <= 4.0 * f64::EPSILON * x.abs().max(y.abs()),
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

/// [`same_json`] on the JSON parts of two configs, equality on the rest.
fn same_config(a: &NetworkConfig, b: &NetworkConfig) -> bool {
    let same_opt = |x: &Option<Value>, y: &Option<Value>| match (x, y) {
        (Some(x), Some(y)) => same_json(x, y),
        _ => x == y,
    };
    let ipam = |c: &NetworkConfig| c.ipam.clone().map(Value::Object);
    same_json(
        &Value::Object(a.raw().clone()),
        &Value::Object(b.raw().clone()),
    ) && (
        &a.cni_version,
        &a.name,
        &a.plugin_type,
        &a.dns,
        &a.prev_result,
    ) == (
        &b.cni_version,
        &b.name,
        &b.plugin_type,
        &b.dns,
        &b.prev_result,
    ) && a.valid_attachments == b.valid_attachments
        && same_opt(&ipam(a), &ipam(b))
        && same_opt(&a.runtime_config, &b.runtime_config)
        && same_opt(&a.args, &b.args)
}

/// The version a result is read in: its own `cniVersion` when it names one, else `default`.
fn effective_version(value: &Value, default: Version) -> Version {
    match value.get("cniVersion").and_then(Value::as_str) {
        None | Some("") => default,
        Some(v) => v.parse().unwrap_or(default),
    }
}

fn check_config_for(command: Command, stdin: &[u8], parsed: &Option<NetworkConfig>) {
    let got = NetworkConfig::parse_for(command, stdin);
    match (&got, parsed) {
        (Ok(c), Some(p)) => {
            assert!(command.check_version(c.cni_version).is_ok());
            assert_eq!(c, p, "parse_for({command}) differs from parse");
        }
        (Ok(c), None) => {
            // Only DEL forgives something: a prevResult that does not decode.
            assert_eq!(
                command,
                Command::Del,
                "{command} accepts what parse refuses"
            );
            assert!(c.prev_result.is_none() && c.get("prevResult").is_some());
        }
        (Err(err), Some(p)) => {
            check_error(err, &CONFIG_CODES);
            assert!(
                matches!(err, Error::VersionForbidsCommand { .. }),
                "parse_for({command}) refuses what parse accepts: {err}"
            );
            assert!(command.check_version(p.cni_version).is_err());
        }
        (Err(err), None) => check_error(err, &CONFIG_CODES),
    }
}

/// `CNI_ARGS` written back from what was parsed (`IgnoreUnknown` first, then the known
/// keys, then the plugin's and the unknown pairs in order).
fn render_args(a: &CniArgs) -> String {
    let mut parts = Vec::new();
    if a.ignore_unknown {
        parts.push("IgnoreUnknown=1".to_owned());
    }
    for (key, value) in [
        (K8S_POD_NAMESPACE, &a.k8s_pod_namespace),
        (K8S_POD_NAME, &a.k8s_pod_name),
        (K8S_POD_UID, &a.k8s_pod_uid),
        (K8S_POD_INFRA_CONTAINER_ID, &a.k8s_pod_infra_container_id),
    ] {
        if let Some(v) = value {
            parts.push(format!("{key}={v}"));
        }
    }
    for (k, v) in a.plugin.iter().chain(&a.unknown) {
        parts.push(format!("{k}={v}"));
    }
    parts.join(";")
}

fn check_args(s: &str, args_keys: &[&str]) {
    let args = match CniArgs::parse_with(s, args_keys) {
        Ok(a) => a,
        Err(err) => {
            check_error(
                &err,
                &[
                    code::UNSUPPORTED_FIELD,
                    code::INVALID_ENV,
                    code::INVALID_CONFIG,
                ],
            );
            return;
        }
    };
    assert!(args.ignore_unknown || args.unknown.is_empty());
    for v in [
        &args.k8s_pod_namespace,
        &args.k8s_pod_name,
        &args.k8s_pod_uid,
        &args.k8s_pod_infra_container_id,
    ]
    .into_iter()
    .flatten()
    {
        assert!(!v.is_empty() && !v.contains(';'), "{v:?}");
    }
    for (k, _) in &args.plugin {
        assert!(
            args_keys.contains(&k.as_str()),
            "{k} is no key of the plugin's"
        );
    }
    for (k, _) in &args.unknown {
        assert!(args.unknown_value(k).is_some());
    }
    let rendered = render_args(&args);
    match CniArgs::parse_with(&rendered, args_keys) {
        Ok(back) => assert_eq!(back, args, "{s:?} → {rendered:?}"),
        Err(err) => panic!("{s:?} → {rendered:?} is refused: {err}"),
    }
}

/// Answers ADD with `prevResult` (or one fixed address), everything else with success.
struct Echo;

impl Plugin for Echo {
    fn add(&self, request: &AttachmentRequest) -> Result<CniResult, Error> {
        Ok(request
            .config
            .prev_result
            .clone()
            .unwrap_or_else(fixed_result))
    }
    fn del(&self, _: &AttachmentRequest) -> Result<(), Error> {
        Ok(())
    }
    fn check(&self, _: &AttachmentRequest) -> Result<(), Error> {
        Ok(())
    }
}

fn fixed_result() -> CniResult {
    CniResult {
        ips: vec![IpConfig::new("10.7.168.173/16".parse().expect("a CIDR"))],
        ..CniResult::default()
    }
}

/// An error as comparable text.
fn describe(err: &Error) -> (u32, String, String) {
    (err.code(), err.to_string(), err.details())
}

/// [`Echo`] for a plugin that declares `CNI_ARGS` keys of its own.
struct EchoWith<'a>(&'a [&'a str]);

impl Plugin for EchoWith<'_> {
    fn add(&self, request: &AttachmentRequest) -> Result<CniResult, Error> {
        Echo.add(request)
    }
    fn del(&self, _: &AttachmentRequest) -> Result<(), Error> {
        Ok(())
    }
    fn check(&self, _: &AttachmentRequest) -> Result<(), Error> {
        Ok(())
    }
    fn args_keys(&self) -> &[&str] {
        self.0
    }
}

fn check_invocation(env: &HashMap<String, String>, stdin: &[u8], args_keys: &[&str]) {
    let lookup = |name: &str| env.get(name).cloned();
    let invocation = Invocation::parse_with(lookup, stdin, args_keys);

    // Invocation::parse is Env, then the config for the command, then CNI_ARGS.
    let expected: Result<(), Error> = Env::from_lookup(lookup).and_then(|e| {
        if e.command == Command::Version {
            return Ok(());
        }
        NetworkConfig::parse_for(e.command, stdin)?;
        if let Some(args) = &e.args {
            CniArgs::parse_with(args, args_keys)?;
        }
        Ok(())
    });
    match (&invocation, &expected) {
        (Ok(inv), Ok(())) => {
            let env = Env::from_lookup(lookup).expect("checked above");
            assert_eq!(inv.command(), env.command);
            if let Some(config) = inv.config() {
                let alone = NetworkConfig::parse_for(env.command, stdin).expect("checked above");
                assert_eq!(config, &alone);
            }
            if let Invocation::Add(r) | Invocation::Del(r) | Invocation::Check(r) = inv {
                assert_eq!(Some(&r.container_id), env.container_id.as_ref());
                assert_eq!(Some(&r.ifname), env.ifname.as_ref());
                assert_eq!(r.netns, env.netns);
                let args = env
                    .args
                    .as_deref()
                    .map(|a| CniArgs::parse_with(a, args_keys))
                    .transpose();
                let args = args.expect("checked above").unwrap_or_default();
                assert_eq!(r.args, args);
            }
        }
        (Err(got), Err(want)) => {
            assert_eq!(describe(got), describe(want));
            check_error(
                got,
                &[
                    code::INCOMPATIBLE_VERSION,
                    code::UNSUPPORTED_FIELD,
                    code::INVALID_ENV,
                    code::DECODE,
                    code::INVALID_CONFIG,
                ],
            );
        }
        (got, want) => panic!(
            "Invocation::parse is {:?}, its parts say {:?}",
            got.as_ref().map(Invocation::command).map_err(describe),
            want.as_ref().map_err(describe)
        ),
    }

    let out = run_with(&EchoWith(args_keys), lookup, stdin);
    let printed: Option<Value> = if out.stdout.is_empty() {
        None
    } else {
        Some(serde_json::from_slice(&out.stdout).expect("stdout is JSON"))
    };
    match &invocation {
        Err(err) => {
            assert_eq!(out.exit_code, 1);
            let printed = printed.expect("an error result");
            let version = peek_version(stdin).unwrap_or(Version::LATEST);
            assert_eq!(printed["cniVersion"], version.as_str());
            assert_eq!(printed["code"], err.code());
            assert_eq!(printed["msg"], err.to_string());
        }
        Ok(inv) => {
            assert_eq!(out.exit_code, 0, "{printed:?}");
            match inv {
                Invocation::Add(r) => {
                    let version = r.config.cni_version;
                    let printed = printed.expect("a result");
                    assert_eq!(printed["cniVersion"], version.as_str());
                    let back = CniResult::parse(&out.stdout, Version::V0_3_0)
                        .unwrap_or_else(|e| panic!("the ADD result does not read back: {e}"));
                    let mut expected = r.config.prev_result.clone().unwrap_or_else(fixed_result);
                    expected.restrict_to(version);
                    assert_eq!(back, expected);
                }
                Invocation::Version => {
                    let printed = printed.expect("the version info");
                    assert_eq!(printed["cniVersion"], Version::LATEST.as_str());
                }
                _ => assert!(printed.is_none()),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// CNI results
// ---------------------------------------------------------------------------------------

/// Fuzz target `cni_result`. Input: optionally a first line naming a version (`0.3.1`) —
/// the version a result without its own `cniVersion` is read in (default 1.0.0) — then
/// the result's JSON. Checks `CniResult::parse` against `from_value`, that what it accepts
/// fits its version, and the `to_json` → `parse` round trip in every version.
pub fn check_cni_result(data: &[u8]) {
    let (default, json) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => match std::str::from_utf8(&data[..at])
            .ok()
            .and_then(|l| l.trim().parse().ok())
        {
            Some(v) => (v, &data[at + 1..]),
            None => (Version::V1_0_0, data),
        },
        None => (Version::V1_0_0, data),
    };
    let result = CniResult::parse(json, default);
    let value = serde_json::from_slice::<Value>(json).ok();
    if let Some(value) = &value {
        let via_value = CniResult::from_value(value.clone(), default);
        match (&result, &via_value) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(a), Err(b)) => assert_eq!(describe(a), describe(b)),
            _ => panic!("parse and from_value disagree"),
        }
    }
    let result = match result {
        Ok(r) => r,
        Err(err) => {
            check_error(&err, &[code::INCOMPATIBLE_VERSION, code::DECODE]);
            return;
        }
    };
    let version = effective_version(value.as_ref().expect("it parsed"), default);
    let mut fits = result.clone();
    fits.restrict_to(version);
    assert_eq!(
        fits, result,
        "the result holds fields {version} does not define"
    );

    for v in SUPPORTED {
        let bytes = result.to_json(v);
        let printed: Value = serde_json::from_slice(&bytes).expect("a result is JSON");
        assert_eq!(printed, result.to_value(v));
        assert_eq!(printed["cniVersion"], v.as_str());
        if let Some(ips) = printed.get("ips").and_then(Value::as_array) {
            for (ip, config) in ips.iter().zip(&result.ips) {
                let family = match config.address {
                    ipnet::IpNet::V4(_) => "4",
                    ipnet::IpNet::V6(_) => "6",
                };
                let want = v.has_ip_version_field().then_some(family);
                assert_eq!(ip.get("version").and_then(Value::as_str), want);
            }
        }
        let back = CniResult::parse(&bytes, Version::V0_3_0)
            .unwrap_or_else(|e| panic!("the result written in {v} does not read back: {e}"));
        let mut expected = result.clone();
        expected.restrict_to(v);
        assert_eq!(back, expected, "written in {v} and read back");
    }
    let ipam = result.clone().into_ipam();
    assert!(ipam.interfaces.is_empty() && ipam.ips.iter().all(|ip| ip.interface.is_none()));
    assert_eq!(ipam.ips.len(), result.ips.len());
}
