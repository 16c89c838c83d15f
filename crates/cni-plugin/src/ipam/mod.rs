//! `berth-ipam`: the IPAM plugin, as a [`Plugin`] ([`BerthIpam`]).
//!
//! It may be installed under any name: the seed's `"ipam": {"type": "spiderpool"}` works once
//! the binary is installed as `spiderpool` next to macvlan.
//!
//! # Modes
//!
//! [`resolve_mode`] picks one per invocation, and the choice is logged:
//!
//! 1. `ipam_unix_socket_path` set → **agent mode**: one HTTP request to the node agent on that
//!    socket ([`crate::agent`]), which holds the store;
//! 2. `data_dir` set → **embedded mode**: the plugin opens the sled store in the data dir
//!    itself, under its lock file (waiting, not failing, while another plugin process holds
//!    it), allocates through the engine, and exits once its writes are flushed — unless an
//!    agent serves that data dir (`<data_dir>/agent` names a socket that accepts connections),
//!    then it sends its one request to that agent instead of waiting for the lock;
//! 3. neither → agent mode if [`DEFAULT_SOCKET`](crate::agent::DEFAULT_SOCKET) exists, else
//!    embedded mode in [`DEFAULT_DATA_DIR`] (with the same agent-record rule).
//!
//! Both modes run the same operations ([`ops`]): in embedded mode on the plugin's own
//! engine, in agent mode on the agent's.
//!
//! # The pod
//!
//! [`PodIdentity`]: `K8S_POD_NAMESPACE` / `K8S_POD_NAME` / `K8S_POD_UID` from `CNI_ARGS` when
//! given; otherwise (podman and other plain runtimes) namespace `default`, name
//! `ctr-<container id>` ([`derived_pod_name`]) and the container id as uid. The node is the
//! host name. With `BERTH_OWNER=<Kind>/<name>` the pod belongs to that Deployment or
//! StatefulSet as `berth apply` recorded it in the store: the workload's pod-template
//! annotations and labels are the pod's, and the workload is its application, so the seed's
//! annotations (subnets per interface, `ippool-ip-number: "+1"`, manual pools, sticky
//! StatefulSet IPs) choose the pools. An owner the store does not know is code 104. Without
//! an owner the pools come from the config's `default_ipv4_ippool` / `default_ipv6_ippool`,
//! then from pools with `spec.default: true`.
//!
//! # Commands
//!
//! - ADD allocates one NIC: `CNI_IFNAME`, recorded with the CNI network `name` and the netns
//!   path. The result has the address with the pool subnet's prefix length, the gateway, a
//!   `0.0.0.0/0` (`::/0`) route via the gateway unless `clean_gateway`, and the pool's
//!   routes, written in the request's `cniVersion`. A retried ADD returns the same result.
//!
//!   With `enable_ip_conflict_detection` / `enable_gateway_detection` (or the agent's
//!   defaults, when the network config does not say), the NIC is probed before the result is
//!   returned ([`probe`]): a conflict (code 107, naming the IP and the MAC that answered) or
//!   an unreachable gateway (108) fails ADD and releases the IPs this ADD allocated on the
//!   NIC, so the runtime's retry gets others (the allocator hands out fresh addresses, round
//!   robin from the pool's cursor, before any released one). A StatefulSet pod keeps its
//!   IPs: the error says so, and every retry finds the same conflict until the other holder
//!   is gone. The probe runs after the store is closed, so in embedded mode other plugins do
//!   not wait for it.
//! - DEL releases what the container holds on `CNI_IFNAME`; unknown containers succeed.
//! - CHECK fails with code 105 unless the container still holds every address of
//!   `prevResult` on `CNI_IFNAME`.
//! - GC (1.1.0) releases the attachments recorded for this network that
//!   `cni.dev/valid-attachments` (or `cni.dev/attachments`) does not list; without the key,
//!   nothing.
//! - STATUS (1.1.0) succeeds when the store (or the agent) answers, else code 50.

pub mod config;
pub mod identity;
pub mod liveness;
pub mod mode;
pub mod ops;
pub mod probe;

use std::future::Future;
use std::path::PathBuf;
use std::time::Instant;

use ipam_core::engine::Engine;
use ipam_store_sled::SledStore;

pub use config::{DEFAULT_LOG_FILE, IpamConfig};
pub use identity::{PodIdentity, derived_pod_name};
pub use liveness::NetnsLiveness;
pub use mode::{DEFAULT_DATA_DIR, Mode, ModeDefaults, resolve_mode};

use crate::agent::AgentClient;
use crate::agent::protocol::{AddArgs, AddResponse, CheckArgs, DelArgs, NetworkGcArgs};
use berth_cni::config::{NetworkConfig, peek_ipam};
use berth_cni::error::code as spec;
use berth_cni::logging::{init_file_logging_with, init_stderr_logging, level_filter};
use berth_cni::{AttachmentRequest, CniResult, NetworkRequest, Plugin};

use crate::datadir::{DataDirOptions, DataDirStore, open_data_dir};
use crate::error::Error;
use crate::owner::{BERTH_OWNER, owner_of};

/// The `berth-ipam` plugin (see the [module docs](self)).
#[derive(Debug, Clone, Default)]
pub struct BerthIpam {
    defaults: ModeDefaults,
    data_dir: DataDirOptions,
}

/// Where one invocation's work is done.
enum Backend {
    Agent(AgentClient),
    Local(Box<Engine<SledStore>>),
}

impl BerthIpam {
    /// The plugin with the default socket, data dir and lock timeout.
    pub fn new() -> Self {
        BerthIpam::default()
    }

    /// The plugin with other fallback paths for mode resolution.
    pub fn with_defaults(defaults: ModeDefaults) -> Self {
        BerthIpam {
            defaults,
            data_dir: DataDirOptions::default(),
        }
    }

    /// The plugin with other data-dir options (lock timeout, flush policy).
    pub fn with_data_dir_options(mut self, options: DataDirOptions) -> Self {
        self.data_dir = options;
        self
    }

    /// Runs `work` on a fresh current-thread runtime: one invocation per process needs no
    /// more (the store's syncs run in place).
    fn block_on<T>(&self, work: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|source| Error::io("starting the async runtime", source))?
            .block_on(work)
    }

    async fn backend(&self, config: &NetworkConfig) -> Result<Backend, Error> {
        let mode = self.mode_of(&IpamConfig::of(config)?, &config.name);
        self.backend_in(mode).await
    }

    /// The mode of an `ipam` object, resolved once per call (and logged). In agent mode a
    /// call is one blocking request and the process starts no async runtime.
    fn mode_of(&self, ipam: &IpamConfig, network: &str) -> Mode {
        let mode = resolve_mode(ipam, &self.defaults);
        tracing::debug!(%mode, network, "IPAM mode");
        mode
    }

    /// Where a call in `mode` is served: the agent, or the data dir (which may turn out to be
    /// served by an agent too).
    async fn backend_in(&self, mode: Mode) -> Result<Backend, Error> {
        match mode {
            Mode::Agent { socket, .. } => Ok(Backend::Agent(AgentClient::new(socket))),
            Mode::Embedded { data_dir, .. } => {
                let started = Instant::now();
                match open_data_dir(&data_dir, &self.data_dir).await? {
                    DataDirStore::Agent(store) => Ok(Backend::Agent(store.client().clone())),
                    DataDirStore::Sled(store) => {
                        tracing::debug!(elapsed = ?started.elapsed(), "opened the store");
                        Ok(Backend::Local(Box::new(Engine::new(store))))
                    }
                }
            }
        }
    }
}

impl Plugin for BerthIpam {
    /// Berth's version and commit, in the log line of every call.
    fn version(&self) -> Option<&str> {
        Some(berth_cni::BUILD)
    }

    fn add(&self, r: &AttachmentRequest) -> Result<CniResult, berth_cni::Error> {
        Ok(self.add_nic(r)?)
    }

    fn del(&self, r: &AttachmentRequest) -> Result<(), berth_cni::Error> {
        Ok(self.del_nic(r)?)
    }

    fn check(&self, r: &AttachmentRequest) -> Result<(), berth_cni::Error> {
        Ok(self.check_nic(r)?)
    }

    fn gc(&self, r: &NetworkRequest) -> Result<(), berth_cni::Error> {
        Ok(self.network_gc(r)?)
    }

    fn status(&self, r: &NetworkRequest) -> Result<(), berth_cni::Error> {
        self.status_of(r).map_err(|e| match e.code() {
            spec::NOT_AVAILABLE | spec::LIMITED_CONNECTIVITY => e.into(),
            _ => berth_cni::Error::NotAvailable(e.to_cni_error().to_string()),
        })
    }

    fn args_keys(&self) -> &[&str] {
        &[BERTH_OWNER]
    }

    /// Logs to the config's `log_file_path` ([`DEFAULT_LOG_FILE`] when the `ipam` object
    /// names none) at its `log_level`, rotated by its `log_file_max_size`,
    /// `log_file_max_age` and `log_file_max_count` ([`IpamConfig::rotation`]); to stderr
    /// when stdin has no readable `ipam` object (VERSION, garbage, a key that does not
    /// decode), since then nothing says where the admin wants the logs.
    fn prepare(&self, stdin: &[u8]) {
        match peek_ipam::<IpamConfig>(stdin) {
            Some(ipam) => {
                let path = ipam
                    .log_file_path
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_LOG_FILE));
                init_file_logging_with(
                    &path,
                    level_filter(ipam.log_level.as_deref()),
                    ipam.rotation(),
                );
            }
            None => {
                init_stderr_logging(level_filter(None));
            }
        }
    }
}

/// What to probe on `ifname`: each of its addresses, with the network config's
/// `enable_ip_conflict_detection` / `enable_gateway_detection` where set, else the flags the
/// agent marked the address with (its defaults; never set in embedded mode).
pub fn probe_targets(answer: &AddResponse, ifname: &str, ipam: &IpamConfig) -> Vec<probe::Target> {
    answer
        .ips
        .iter()
        .filter(|ip| ip.nic == ifname)
        .map(|ip| {
            let gateway = ipam
                .enable_gateway_detection
                .unwrap_or(ip.enable_gateway_detection);
            probe::Target {
                address: ip.address.addr(),
                conflict: ipam
                    .enable_ip_conflict_detection
                    .unwrap_or(ip.enable_ip_conflict_detection),
                gateway: ip.gateway.filter(|_| gateway),
            }
        })
        .collect()
}

impl BerthIpam {
    fn add_nic(&self, r: &AttachmentRequest) -> Result<CniResult, Error> {
        let pod = PodIdentity::of(&r.args, &r.container_id);
        let ipam = IpamConfig::of(&r.config)?;
        let owner = owner_of(&r.args)?;
        let args = AddArgs {
            container_id: r.container_id.clone(),
            if_name: r.ifname.clone(),
            net_namespace: r
                .netns
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            pod_namespace: pod.namespace,
            pod_name: pod.name,
            pod_uid: pod.uid,
            default_ipv4_ippool: ipam.default_ipv4_ippool.clone(),
            default_ipv6_ippool: ipam.default_ipv6_ippool.clone(),
            clean_gateway: ipam.clean_gateway,
            network: Some(r.config.name.clone()),
            owner,
            node: None,
        };
        let answer = match self.mode_of(&ipam, &r.config.name) {
            Mode::Agent { socket, .. } => AgentClient::new(socket).add_blocking(&args)?,
            mode => self.block_on(async {
                match self.backend_in(mode).await? {
                    Backend::Agent(agent) => agent.add(&args).await,
                    Backend::Local(engine) => ops::add(&engine, &args, &ops::node_name()).await,
                }
            })?,
        };
        let targets = probe_targets(&answer, &r.ifname, &ipam);
        if targets.iter().any(|t| t.conflict || t.gateway.is_some()) {
            self.probe_nic(r, &args, &targets)?;
        }
        Ok(answer.to_cni_result(&r.ifname))
    }

    /// Probes the NIC ([`probe`]); on failure releases what this ADD allocated on it and
    /// fails with what was found and what became of the IPs.
    fn probe_nic(
        &self,
        r: &AttachmentRequest,
        args: &AddArgs,
        targets: &[probe::Target],
    ) -> Result<(), Error> {
        let Some(netns) = &r.netns else {
            return Err(Error::invalid_config(
                "IP conflict or gateway detection is enabled but CNI_NETNS is not set",
            ));
        };
        let started = Instant::now();
        let timing = probe::Timing::default();
        let outcome =
            self.block_on(async { Ok(probe::probe(netns, &r.ifname, targets, &timing).await) })?;
        let Err(found) = outcome else {
            tracing::info!(ifname = %r.ifname, ?targets, elapsed = ?started.elapsed(), "probed: no conflict, gateways answer");
            return Ok(());
        };
        tracing::warn!(ifname = %r.ifname, error = %found, elapsed = ?started.elapsed(), "probe failed: releasing");
        let del = DelArgs {
            container_id: args.container_id.clone(),
            if_name: args.if_name.clone(),
            net_namespace: r.netns.as_ref().map(|p| p.display().to_string()),
            pod_namespace: args.pod_namespace.clone(),
            pod_name: args.pod_name.clone(),
            pod_uid: args.pod_uid.clone(),
        };
        let released = self.block_on(async {
            match self.backend(&r.config).await? {
                Backend::Agent(agent) => agent.del(&del).await,
                Backend::Local(engine) => ops::del(&engine, &del).await,
            }
        });
        let list = |ips: &[crate::agent::protocol::ReleasedIp]| {
            ips.iter()
                .map(|r| r.ip.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let aftermath = match released {
            Ok(d) if !d.kept_for_statefulset.is_empty() => format!(
                "StatefulSet pod {} keeps its IPs ({}): free the address on the other host, \
                 then the pod starts with it",
                d.kept_for_statefulset[0].pod,
                list(&d.kept_for_statefulset)
            ),
            Ok(d) if !d.released.is_empty() => format!(
                "released {} of {}; the next ADD gets other IPs",
                list(&d.released),
                d.released[0].pod
            ),
            Ok(_) => "nothing was held to release".to_owned(),
            Err(e) => format!("and releasing the IPs failed: {e}"),
        };
        Err(Error::Probe {
            probe: found,
            aftermath,
        })
    }

    fn del_nic(&self, r: &AttachmentRequest) -> Result<(), Error> {
        let pod = PodIdentity::of(&r.args, &r.container_id);
        let args = DelArgs {
            container_id: r.container_id.clone(),
            if_name: r.ifname.clone(),
            net_namespace: r.netns.as_ref().map(|p| p.display().to_string()),
            pod_namespace: pod.namespace,
            pod_name: pod.name,
            pod_uid: pod.uid,
        };
        let ipam = IpamConfig::of(&r.config)?;
        let mode = match self.mode_of(&ipam, &r.config.name) {
            Mode::Agent { socket, .. } => {
                return AgentClient::new(socket).del_blocking(&args).map(drop);
            }
            mode => mode,
        };
        self.block_on(async {
            match self.backend_in(mode).await? {
                Backend::Agent(agent) => agent.del(&args).await,
                Backend::Local(engine) => ops::del(&engine, &args).await,
            }
        })
        .map(drop)
    }

    fn check_nic(&self, r: &AttachmentRequest) -> Result<(), Error> {
        let pod = PodIdentity::of(&r.args, &r.container_id);
        let args = CheckArgs {
            container_id: r.container_id.clone(),
            if_name: r.ifname.clone(),
            pod_namespace: pod.namespace,
            pod_name: pod.name,
            ips: r
                .config
                .prev_result
                .iter()
                .flat_map(|p| p.ips.iter().map(|ip| ip.address.addr()))
                .collect(),
        };
        let ipam = IpamConfig::of(&r.config)?;
        let mode = match self.mode_of(&ipam, &r.config.name) {
            Mode::Agent { socket, .. } => return AgentClient::new(socket).check_blocking(&args),
            mode => mode,
        };
        self.block_on(async {
            match self.backend_in(mode).await? {
                Backend::Agent(agent) => agent.check(&args).await,
                Backend::Local(engine) => ops::check(&engine, &args).await,
            }
        })
    }

    fn network_gc(&self, r: &NetworkRequest) -> Result<(), Error> {
        let args = NetworkGcArgs {
            network: r.config.name.clone(),
            valid_attachments: r.config.valid_attachments.clone(),
        };
        self.block_on(async {
            match self.backend(&r.config).await? {
                Backend::Agent(agent) => agent.network_gc(&args).await,
                Backend::Local(engine) => ops::network_gc(&engine, &args).await,
            }
        })
        .map(drop)
    }

    fn status_of(&self, r: &NetworkRequest) -> Result<(), Error> {
        self.block_on(async {
            match self.backend(&r.config).await? {
                Backend::Agent(agent) => agent.healthy().await,
                Backend::Local(engine) => ops::healthy(&engine).await,
            }
        })
    }
}
