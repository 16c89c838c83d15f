//! One invocation end to end: parse env + stdin, call the plugin, write the answer.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tracing::field::display;

use crate::args::CniArgs;
use crate::command::Command;
use crate::config::{NetworkConfig, peek_version};
use crate::env::{CNI_COMMAND, Env};
use crate::error::Error;
use crate::result::CniResult;
use crate::version::{Version, VersionInfo};

/// ADD, DEL or CHECK of one attachment (container id + interface).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentRequest {
    /// `CNI_CONTAINERID`, validated.
    pub container_id: String,
    /// `CNI_IFNAME`, validated.
    pub ifname: String,
    /// `CNI_NETNS`: always set on ADD and CHECK, optional on DEL.
    pub netns: Option<PathBuf>,
    /// `CNI_ARGS`, parsed (empty when unset).
    pub args: CniArgs,
    /// `CNI_PATH`, split.
    pub path: Vec<PathBuf>,
    /// The network config from stdin.
    pub config: NetworkConfig,
}

/// GC or STATUS: about the network as a whole, no attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRequest {
    /// `CNI_PATH`, split.
    pub path: Vec<PathBuf>,
    /// The network config from stdin (for GC: with
    /// [`valid_attachments`](NetworkConfig::valid_attachments)).
    pub config: NetworkConfig,
}

/// A parsed and checked invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// `CNI_COMMAND=ADD`.
    Add(AttachmentRequest),
    /// `CNI_COMMAND=DEL`.
    Del(AttachmentRequest),
    /// `CNI_COMMAND=CHECK` (config ≥ 0.4.0).
    Check(AttachmentRequest),
    /// `CNI_COMMAND=GC` (config ≥ 1.1.0).
    Gc(NetworkRequest),
    /// `CNI_COMMAND=STATUS` (config ≥ 1.1.0).
    Status(NetworkRequest),
    /// `CNI_COMMAND=VERSION`; stdin was not read.
    Version,
}

impl Invocation {
    /// Parses an invocation: the environment first ([`Env::from_lookup`]), then stdin
    /// ([`NetworkConfig::parse_for`]), then `CNI_ARGS` ([`CniArgs::parse`]) — the order
    /// of the Go skeleton, so the same input fails with the same code. VERSION reads
    /// nothing but `CNI_COMMAND`.
    pub fn parse<F>(lookup: F, stdin: &[u8]) -> Result<Invocation, Error>
    where
        F: Fn(&str) -> Option<String>,
    {
        Invocation::parse_with(lookup, stdin, &[])
    }

    /// [`Invocation::parse`] for a plugin that reads `args_keys` of `CNI_ARGS` itself
    /// ([`CniArgs::parse_with`]).
    pub fn parse_with<F>(lookup: F, stdin: &[u8], args_keys: &[&str]) -> Result<Invocation, Error>
    where
        F: Fn(&str) -> Option<String>,
    {
        let env = Env::from_lookup(lookup)?;
        let command = env.command;
        if command == Command::Version {
            return Ok(Invocation::Version);
        }
        let config = NetworkConfig::parse_for(command, stdin)?;
        if !command.is_attachment() {
            let request = NetworkRequest {
                path: env.path,
                config,
            };
            return Ok(match command {
                Command::Gc => Invocation::Gc(request),
                _ => Invocation::Status(request),
            });
        }
        let args = env
            .args
            .as_deref()
            .map(|a| CniArgs::parse_with(a, args_keys))
            .transpose()?;
        let request = AttachmentRequest {
            container_id: env.container_id.unwrap_or_default(),
            ifname: env.ifname.unwrap_or_default(),
            netns: env.netns,
            args: args.unwrap_or_default(),
            path: env.path,
            config,
        };
        Ok(match command {
            Command::Add => Invocation::Add(request),
            Command::Del => Invocation::Del(request),
            _ => Invocation::Check(request),
        })
    }

    /// The command of this invocation.
    pub fn command(&self) -> Command {
        match self {
            Invocation::Add(_) => Command::Add,
            Invocation::Del(_) => Command::Del,
            Invocation::Check(_) => Command::Check,
            Invocation::Gc(_) => Command::Gc,
            Invocation::Status(_) => Command::Status,
            Invocation::Version => Command::Version,
        }
    }

    /// The network config, except for VERSION.
    pub fn config(&self) -> Option<&NetworkConfig> {
        match self {
            Invocation::Add(r) | Invocation::Del(r) | Invocation::Check(r) => Some(&r.config),
            Invocation::Gc(r) | Invocation::Status(r) => Some(&r.config),
            Invocation::Version => None,
        }
    }
}

/// What a CNI plugin does; the layer handles VERSION, parsing and output.
///
/// Handlers return the crate's [`Error`]; its [code](Error::code) reaches the runtime.
pub trait Plugin {
    /// ADD: return the result to print (in the config's version). An IPAM plugin returns
    /// the abbreviated form ([`CniResult::into_ipam`]); a chained plugin returns
    /// `prevResult`, changed or not.
    fn add(&self, request: &AttachmentRequest) -> Result<CniResult, Error>;

    /// DEL: undo ADD. Must succeed when there is nothing (left) to undo.
    fn del(&self, request: &AttachmentRequest) -> Result<(), Error>;

    /// CHECK: fail when what ADD set up is missing or wrong.
    fn check(&self, request: &AttachmentRequest) -> Result<(), Error>;

    /// GC: release what belongs to no attachment in
    /// [`valid_attachments`](NetworkConfig::valid_attachments). Default: nothing to do.
    fn gc(&self, request: &NetworkRequest) -> Result<(), Error> {
        let _ = request;
        Ok(())
    }

    /// STATUS: fail with [`Error::NotAvailable`] / [`Error::LimitedConnectivity`] when ADD
    /// cannot be served. Default: ready.
    fn status(&self, request: &NetworkRequest) -> Result<(), Error> {
        let _ = request;
        Ok(())
    }

    /// The `CNI_ARGS` keys this plugin reads beyond the spec's and Kubernetes' (kept in
    /// [`CniArgs::plugin`], accepted without `IgnoreUnknown`). Default: none.
    fn args_keys(&self) -> &[&str] {
        &[]
    }

    /// Called by [`run_process`] once per invocation, before anything is parsed, with the raw
    /// stdin (empty for VERSION): the place to set up logging from the config, e.g. from
    /// [`peek_ipam`](crate::config::peek_ipam), so that even a refused input is logged where
    /// the config says. It must not write to stdout. Default: nothing.
    fn prepare(&self, stdin: &[u8]) {
        let _ = stdin;
    }

    /// The plugin's version (and build), logged with every invocation, so that a log says
    /// which build answered. Default: none.
    fn version(&self) -> Option<&str> {
        None
    }
}

/// What one invocation prints on stdout and the status it exits with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// A result, a VERSION answer, an error result, or nothing (DEL, CHECK, GC, STATUS).
    pub stdout: Vec<u8>,
    /// 0 on success, 1 on error.
    pub exit_code: u8,
}

impl Output {
    fn success(stdout: Vec<u8>) -> Output {
        Output {
            stdout,
            exit_code: 0,
        }
    }

    /// The error result for `err`, written in `version`; logged at WARN.
    pub fn error(err: &Error, version: Version) -> Output {
        let cni = err.to_cni_error();
        tracing::warn!(code = cni.code, msg = %cni.msg, details = %cni.details, "CNI error");
        Output::error_result(err, version)
    }

    /// The error result for `err`, written in `version`, not logged.
    fn error_result(err: &Error, version: Version) -> Output {
        Output {
            stdout: err.to_cni_error().to_json(version),
            exit_code: 1,
        }
    }
}

/// Runs one invocation from an environment map and stdin bytes; see [`run_with`].
pub fn run<P: Plugin + ?Sized>(plugin: &P, env: &HashMap<String, String>, stdin: &[u8]) -> Output {
    run_with(plugin, |name| env.get(name).cloned(), stdin)
}

/// Parses ([`Invocation::parse`]), dispatches to `plugin`, and renders:
///
/// - ADD: the result in the config's `cniVersion`;
/// - DEL, CHECK, GC, STATUS: nothing;
/// - VERSION: [`VersionInfo`] (stdin ignored);
/// - any error, including a panic in the plugin (code 999): the error result, written in
///   the config's `cniVersion` when stdin names a supported one, else in
///   [`Version::LATEST`]; exit code 1.
///
/// Each call is logged as one line that says what it did: the command, the container and
/// interface (or the network, for GC and STATUS), the addresses of an ADD's result or the
/// error, and how long it took — at INFO, at WARN when it failed, at DEBUG for VERSION. The
/// rest of the invocation (pid, netns, `cniVersion`) is logged at DEBUG before the call.
pub fn run_with<P, F>(plugin: &P, lookup: F, stdin: &[u8]) -> Output
where
    P: Plugin + ?Sized,
    F: Fn(&str) -> Option<String>,
{
    let started = Instant::now();
    let error_version = || peek_version(stdin).unwrap_or(Version::LATEST);
    let invocation = match Invocation::parse_with(lookup, stdin, plugin.args_keys()) {
        Ok(invocation) => invocation,
        Err(err) => return Output::error(&err, error_version()),
    };
    let version = plugin.version();
    log_invocation(version, &invocation);
    let outcome =
        catch_unwind(AssertUnwindSafe(|| dispatch(plugin, &invocation))).unwrap_or_else(|panic| {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            Err(Error::Internal {
                msg: format!("plugin panicked: {msg}"),
                source: None,
            })
        });
    log_outcome(version, &invocation, &outcome, started.elapsed());
    let version = invocation
        .config()
        .map_or(Version::LATEST, |c| c.cni_version);
    match outcome {
        Ok(done) => Output::success(done.stdout),
        Err(err) => Output::error_result(&err, version),
    }
}

/// What a successful call printed, and the addresses it handed out (ADD).
struct Done {
    stdout: Vec<u8>,
    ips: Vec<IpNet>,
}

impl From<Vec<u8>> for Done {
    fn from(stdout: Vec<u8>) -> Done {
        Done {
            stdout,
            ips: Vec::new(),
        }
    }
}

fn dispatch<P: Plugin + ?Sized>(plugin: &P, invocation: &Invocation) -> Result<Done, Error> {
    match invocation {
        Invocation::Add(r) => {
            let result = plugin.add(r)?;
            Ok(Done {
                stdout: result.to_json(r.config.cni_version),
                ips: result.ips.iter().map(|ip| ip.address).collect(),
            })
        }
        Invocation::Del(r) => plugin.del(r).map(|()| Vec::new().into()),
        Invocation::Check(r) => plugin.check(r).map(|()| Vec::new().into()),
        Invocation::Gc(r) => plugin.gc(r).map(|()| Vec::new().into()),
        Invocation::Status(r) => plugin.status(r).map(|()| Vec::new().into()),
        Invocation::Version => Ok(serde_json::to_vec(&VersionInfo::default())
            .expect("version info always serializes")
            .into()),
    }
}

/// The detail of an invocation, at DEBUG; [`log_outcome`] says what it did. `version`: the
/// plugin's build ([`Plugin::version`]).
fn log_invocation(version: Option<&str>, invocation: &Invocation) {
    let version = version.unwrap_or("-");
    match invocation {
        Invocation::Add(r) | Invocation::Del(r) | Invocation::Check(r) => tracing::debug!(
            command = %invocation.command(),
            version,
            pid = std::process::id(),
            container_id = %r.container_id,
            ifname = %r.ifname,
            netns = ?r.netns,
            network = %r.config.name,
            cni_version = %r.config.cni_version,
            "CNI invocation"
        ),
        Invocation::Gc(r) | Invocation::Status(r) => tracing::debug!(
            command = %invocation.command(),
            version,
            pid = std::process::id(),
            network = %r.config.name,
            cni_version = %r.config.cni_version,
            "CNI invocation"
        ),
        Invocation::Version => tracing::debug!(version, "CNI VERSION"),
    }
}

/// The one line of a call (see [`run_with`]), naming the plugin's build (`version`).
fn log_outcome(
    version: Option<&str>,
    invocation: &Invocation,
    outcome: &Result<Done, Error>,
    elapsed: Duration,
) {
    let command = invocation.command();
    let attachment = match invocation {
        Invocation::Add(r) | Invocation::Del(r) | Invocation::Check(r) => Some(r),
        _ => None,
    };
    let container_id = attachment.map(|r| display(&r.container_id));
    // The pod (`K8S_POD_NAMESPACE/K8S_POD_NAME`) when the runtime names one.
    let pod = attachment.and_then(|r| {
        let name = r.args.k8s_pod_name.as_deref()?;
        let namespace = r.args.k8s_pod_namespace.as_deref().unwrap_or("default");
        Some(display(format!("{namespace}/{name}")))
    });
    let ifname = attachment.map(|r| display(&r.ifname));
    let network = invocation.config().map(|c| display(&c.name));
    match outcome {
        Ok(_) if command == Command::Version => tracing::debug!(?elapsed, "CNI VERSION ok"),
        Ok(done) => {
            let ips = (!done.ips.is_empty()).then(|| {
                display(
                    done.ips
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                )
            });
            tracing::info!(
                pod,
                container_id,
                ifname,
                network,
                ips,
                ?elapsed,
                version,
                "CNI {command} ok"
            );
        }
        Err(err) => {
            let cni = err.to_cni_error();
            tracing::warn!(
                pod,
                container_id,
                ifname,
                network,
                code = cni.code,
                msg = ?cni.msg,
                details = (!cni.details.is_empty()).then_some(&cni.details),
                ?elapsed,
                version,
                "CNI {command} failed"
            );
        }
    }
}

/// The thin process wrapper: reads the real environment and stdin (not for VERSION, so
/// a person can run `CNI_COMMAND=VERSION plugin` at a terminal), hands stdin to
/// [`Plugin::prepare`], writes [`run_with`]'s output to stdout — and nothing else, ever —
/// and returns the exit status for `main`:
///
/// ```no_run
/// # struct MyPlugin;
/// # impl berth_cni::Plugin for MyPlugin {
/// #     fn add(&self, _: &berth_cni::AttachmentRequest) -> Result<berth_cni::CniResult, berth_cni::Error> { unimplemented!() }
/// #     fn del(&self, _: &berth_cni::AttachmentRequest) -> Result<(), berth_cni::Error> { Ok(()) }
/// #     fn check(&self, _: &berth_cni::AttachmentRequest) -> Result<(), berth_cni::Error> { Ok(()) }
/// # }
/// fn main() -> std::process::ExitCode {
///     berth_cni::run_process(&MyPlugin)
/// }
/// ```
///
/// Variables that are not valid UTF-8 are read lossily (and then fail validation).
pub fn run_process<P: Plugin + ?Sized>(plugin: &P) -> ExitCode {
    let lookup = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
    let output = if lookup(CNI_COMMAND).as_deref() == Some(Command::Version.as_str()) {
        plugin.prepare(&[]);
        run_with(plugin, lookup, &[])
    } else {
        let mut stdin = Vec::new();
        let read = std::io::stdin().read_to_end(&mut stdin);
        plugin.prepare(&stdin);
        match read {
            Ok(_) => run_with(plugin, lookup, &stdin),
            Err(source) => Output::error(
                &Error::Io {
                    context: "error reading from stdin".into(),
                    source,
                },
                Version::LATEST,
            ),
        }
    };
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(&output.stdout)
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    ExitCode::from(output.exit_code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GcAttachment;
    use crate::result::{IpConfig, Route};
    use serde_json::{Value, json};
    use std::cell::RefCell;

    /// Records what it was called with; ADD answers one address, IPAM style.
    #[derive(Default)]
    struct Recorder {
        calls: RefCell<Vec<Invocation>>,
        fail_with: Option<fn() -> Error>,
    }

    impl Recorder {
        fn record(&self, inv: Invocation) -> Result<(), Error> {
            self.calls.borrow_mut().push(inv);
            match self.fail_with {
                Some(f) => Err(f()),
                None => Ok(()),
            }
        }
    }

    impl Plugin for Recorder {
        fn add(&self, r: &AttachmentRequest) -> Result<CniResult, Error> {
            self.record(Invocation::Add(r.clone()))?;
            Ok(CniResult {
                ips: vec![IpConfig {
                    address: "10.6.168.172/16".parse().unwrap(),
                    gateway: Some("10.6.0.1".parse().unwrap()),
                    interface: None,
                }],
                routes: vec![Route::new(
                    "0.0.0.0/0".parse().unwrap(),
                    Some("10.6.0.1".parse().unwrap()),
                )],
                ..CniResult::default()
            })
        }
        fn del(&self, r: &AttachmentRequest) -> Result<(), Error> {
            self.record(Invocation::Del(r.clone()))
        }
        fn check(&self, r: &AttachmentRequest) -> Result<(), Error> {
            self.record(Invocation::Check(r.clone()))
        }
        fn gc(&self, r: &NetworkRequest) -> Result<(), Error> {
            self.record(Invocation::Gc(r.clone()))
        }
        fn status(&self, r: &NetworkRequest) -> Result<(), Error> {
            self.record(Invocation::Status(r.clone()))
        }
        fn args_keys(&self) -> &[&str] {
            &["OWNER"]
        }
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn attach_env(command: &str) -> HashMap<String, String> {
        env(&[
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", "4f9e1c0c"),
            ("CNI_NETNS", "/var/run/netns/pod1"),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;OWNER=sts/web",
            ),
            ("CNI_PATH", "/opt/cni/bin"),
        ])
    }

    fn json_of(out: &Output) -> Value {
        serde_json::from_slice(&out.stdout).unwrap()
    }

    const CONF_031: &[u8] =
        br#"{"cniVersion":"0.3.1","name":"macvlan-conf-ens192","type":"macvlan","ipam":{"type":"spiderpool"}}"#;

    #[test]
    fn add_prints_the_result_in_the_config_version() {
        let p = Recorder::default();
        let out = run(&p, &attach_env("ADD"), CONF_031);
        assert_eq!(out.exit_code, 0);
        assert_eq!(
            json_of(&out),
            json!({
                "cniVersion": "0.3.1",
                "ips": [{"version": "4", "address": "10.6.168.172/16", "gateway": "10.6.0.1"}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.6.0.1"}]
            })
        );
        let calls = p.calls.borrow();
        let Invocation::Add(r) = &calls[0] else {
            panic!("not an ADD: {calls:?}")
        };
        assert_eq!(r.container_id, "4f9e1c0c");
        assert_eq!(r.ifname, "eth0");
        assert_eq!(r.netns, Some(PathBuf::from("/var/run/netns/pod1")));
        assert_eq!(r.args.k8s_pod_name.as_deref(), Some("web-0"));
        // The plugin's own key is its own, not an unknown one.
        assert_eq!(r.args.plugin_value("OWNER"), Some("sts/web"));
        assert!(r.args.unknown.is_empty());
        assert_eq!(r.path, vec![PathBuf::from("/opt/cni/bin")]);
        assert_eq!(r.config.name, "macvlan-conf-ens192");
    }

    #[test]
    fn add_in_1_1_0_has_no_ip_version() {
        let out = run(
            &Recorder::default(),
            &attach_env("ADD"),
            br#"{"cniVersion":"1.1.0","name":"n"}"#,
        );
        let v = json_of(&out);
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(
            v["ips"],
            json!([{"address": "10.6.168.172/16", "gateway": "10.6.0.1"}])
        );
    }

    #[test]
    fn del_check_print_nothing() {
        for cmd in ["DEL", "CHECK"] {
            let p = Recorder::default();
            let out = run(
                &p,
                &attach_env(cmd),
                br#"{"cniVersion":"0.4.0","name":"n"}"#,
            );
            assert_eq!(out, Output::success(vec![]), "{cmd}");
            assert_eq!(p.calls.borrow()[0].command().as_str(), cmd);
        }
    }

    #[test]
    fn del_without_netns() {
        let p = Recorder::default();
        let mut e = attach_env("DEL");
        e.remove("CNI_NETNS");
        let out = run(&p, &e, CONF_031);
        assert_eq!(out.exit_code, 0);
        let calls = p.calls.borrow();
        let Invocation::Del(r) = &calls[0] else {
            panic!()
        };
        assert_eq!(r.netns, None);
    }

    #[test]
    fn version_ignores_stdin() {
        let p = Recorder::default();
        for stdin in [&b""[..], b"garbage", br#"{"cniVersion":"0.3.1"}"#] {
            let out = run(&p, &env(&[("CNI_COMMAND", "VERSION")]), stdin);
            assert_eq!(out.exit_code, 0);
            assert_eq!(
                json_of(&out),
                json!({
                    "cniVersion": "1.1.0",
                    "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
                })
            );
        }
        assert!(p.calls.borrow().is_empty());
    }

    #[test]
    fn gc_and_status_need_only_command_and_config() {
        let p = Recorder::default();
        let conf = json!({
            "cniVersion": "1.1.0", "name": "n", "type": "macvlan",
            "cni.dev/attachments": [{"containerID": "c1", "ifname": "eth0"}]
        });
        let stdin = serde_json::to_vec(&conf).unwrap();
        let out = run(&p, &env(&[("CNI_COMMAND", "GC")]), &stdin);
        assert_eq!(out, Output::success(vec![]));
        let out = run(&p, &env(&[("CNI_COMMAND", "STATUS")]), &stdin);
        assert_eq!(out, Output::success(vec![]));
        let calls = p.calls.borrow();
        let Invocation::Gc(r) = &calls[0] else {
            panic!()
        };
        assert_eq!(
            r.config.valid_attachments,
            Some(vec![GcAttachment {
                container_id: "c1".into(),
                ifname: "eth0".into()
            }])
        );
        assert!(matches!(calls[1], Invocation::Status(_)));
    }

    #[test]
    fn old_config_versions_refuse_check_gc_status() {
        for (cmd, conf) in [
            ("CHECK", r#"{"cniVersion":"0.3.1","name":"n"}"#),
            ("GC", r#"{"cniVersion":"1.0.0","name":"n"}"#),
            ("STATUS", r#"{"cniVersion":"0.4.0","name":"n"}"#),
        ] {
            let p = Recorder::default();
            let e = if cmd == "CHECK" {
                attach_env(cmd)
            } else {
                env(&[("CNI_COMMAND", cmd)])
            };
            let out = run(&p, &e, conf.as_bytes());
            assert_eq!(out.exit_code, 1);
            let v = json_of(&out);
            assert_eq!(v["code"], 1, "{cmd}");
            assert_eq!(
                v["msg"],
                format!("config version does not allow {cmd}"),
                "{cmd}"
            );
            assert!(p.calls.borrow().is_empty());
        }
    }

    #[test]
    fn env_errors() {
        let p = Recorder::default();
        let out = run(&p, &env(&[]), CONF_031);
        assert_eq!(
            json_of(&out),
            json!({"cniVersion": "0.3.1", "code": 4, "msg": "required env variables [CNI_COMMAND] missing"})
        );
        let out = run(&p, &env(&[("CNI_COMMAND", "DEL")]), CONF_031);
        assert_eq!(
            json_of(&out)["msg"],
            "required env variables [CNI_CONTAINERID,CNI_IFNAME] missing"
        );
        let out = run(&p, &env(&[("CNI_COMMAND", "BOGUS")]), CONF_031);
        assert_eq!(json_of(&out)["msg"], "unknown CNI_COMMAND: BOGUS");
        let mut e = attach_env("ADD");
        e.insert("CNI_CONTAINERID".into(), "a/../../x".into());
        let out = run(&p, &e, CONF_031);
        assert_eq!(
            (out.exit_code, json_of(&out)["code"].clone()),
            (1, json!(4))
        );
        assert!(p.calls.borrow().is_empty());
    }

    #[test]
    fn stdin_errors() {
        let p = Recorder::default();
        let out = run(&p, &attach_env("ADD"), b"{garbage");
        let v = json_of(&out);
        assert_eq!((out.exit_code, v["code"].clone()), (1, json!(6)));
        assert_eq!(v["cniVersion"], "1.1.0", "no readable version: the latest");
        assert_eq!(v["msg"], "error decoding network config");

        let out = run(
            &p,
            &attach_env("ADD"),
            br#"{"cniVersion":"9.9.9","name":"n"}"#,
        );
        let v = json_of(&out);
        assert_eq!(v["code"], 1);
        assert_eq!(v["msg"], "incompatible CNI versions");
        assert_eq!(
            v["details"],
            r#"config is "9.9.9", plugin supports ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]"#
        );

        let out = run(&p, &attach_env("ADD"), br#"{"cniVersion":"0.3.1"}"#);
        assert_eq!(
            json_of(&out),
            json!({"cniVersion": "0.3.1", "code": 7, "msg": "missing network name"})
        );
        assert!(p.calls.borrow().is_empty());
    }

    #[test]
    fn cni_args_errors() {
        let p = Recorder::default();
        let mut e = attach_env("ADD");
        e.insert("CNI_ARGS".into(), "K8S_POD_NAME=p;FOO=bar".into());
        assert_eq!(json_of(&run(&p, &e, CONF_031))["code"], 2);
        e.insert("CNI_ARGS".into(), "novalue".into());
        assert_eq!(json_of(&run(&p, &e, CONF_031))["code"], 4);
        assert!(p.calls.borrow().is_empty());
    }

    #[test]
    fn handler_errors_keep_their_code_and_the_config_version() {
        let p = Recorder {
            fail_with: Some(|| {
                Error::plugin(
                    100,
                    std::io::Error::other("pool auto4-web-eth0-1a2b3 has no free IP for eth0"),
                )
            }),
            ..Recorder::default()
        };
        let out = run(&p, &attach_env("ADD"), CONF_031);
        assert_eq!(out.exit_code, 1);
        assert_eq!(
            json_of(&out),
            json!({
                "cniVersion": "0.3.1",
                "code": 100,
                "msg": "pool auto4-web-eth0-1a2b3 has no free IP for eth0"
            })
        );
        let p = Recorder {
            fail_with: Some(|| Error::NotAvailable("agent socket missing".into())),
            ..Recorder::default()
        };
        let out = run(
            &p,
            &env(&[("CNI_COMMAND", "STATUS")]),
            br#"{"cniVersion":"1.1.0","name":"n"}"#,
        );
        assert_eq!(json_of(&out)["code"], 50);
    }

    #[test]
    fn a_panicking_handler_becomes_code_999() {
        struct Panics;
        impl Plugin for Panics {
            fn add(&self, _: &AttachmentRequest) -> Result<CniResult, Error> {
                panic!("boom")
            }
            fn del(&self, _: &AttachmentRequest) -> Result<(), Error> {
                Ok(())
            }
            fn check(&self, _: &AttachmentRequest) -> Result<(), Error> {
                Ok(())
            }
        }
        let out = run(&Panics, &attach_env("ADD"), CONF_031);
        assert_eq!(out.exit_code, 1);
        let v = json_of(&out);
        assert_eq!(v["code"], 999);
        assert_eq!(v["msg"], "plugin panicked: boom");
        // Default GC and STATUS succeed.
        let out = run(
            &Panics,
            &env(&[("CNI_COMMAND", "GC")]),
            br#"{"cniVersion":"1.1.0","name":"n"}"#,
        );
        assert_eq!(out.exit_code, 0);
    }
}
