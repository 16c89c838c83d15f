//! `berth-route`, the chained CNI plugin ([`BerthRoute`]): the seed's `{"type": "veth"}`.
//!
//! Chained after the main plugin (macvlan with `berth-ipam`), once per NIC. It reads the
//! NIC from `prevResult` ([`Nic::from_result`]), wires it ([`PodRouting`]) and prints
//! `prevResult` unchanged, in the request's version (0.3.0 to 1.1.0 — the protocol layer
//! converts). Commands:
//!
//! - ADD: [`PodRouting::add`]; no `prevResult` is code 7 (it must be chained);
//! - DEL: [`PodRouting::del`]; `prevResult` and `CNI_NETNS` are optional;
//! - CHECK (0.4.0+): [`PodRouting::check`], code 111 listing everything missing;
//! - GC (1.1.0): deletes the node ends this network made for containers that are not in
//!   `cni.dev/valid-attachments`; without the list, nothing;
//! - STATUS (1.1.0): ready.
//!
//! Install it as `veth` to run the seed's NetworkAttachmentDefinitions unchanged.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::PathBuf;

use berth_cni::logging::{init_file_logging_with, init_stderr_logging, level_filter};
use berth_cni::{AttachmentRequest, CniResult, NetworkRequest, Plugin};

use crate::config::{DEFAULT_LOG_FILE, Mode, RouteConfig, default_route_nic_annotation};
use crate::error::Error;
use crate::plan::Nic;
use crate::pod::{Attachment, PodRouting};

/// The `berth-route` plugin (see the [module docs](self)).
#[derive(Debug, Clone, Default)]
pub struct BerthRoute {
    node_netns: Option<PathBuf>,
}

impl BerthRoute {
    /// The plugin; the node is the namespace it runs in.
    pub fn new() -> BerthRoute {
        BerthRoute::default()
    }

    /// The plugin with another namespace playing the node (tests).
    pub fn with_node_netns(path: impl Into<PathBuf>) -> BerthRoute {
        BerthRoute {
            node_netns: Some(path.into()),
        }
    }

    fn routing(&self, r: &AttachmentRequest, config: &RouteConfig) -> PodRouting {
        let annotation = default_route_nic_annotation(r.config.runtime_config.as_ref(), &r.args);
        let routing = PodRouting::new(config.settings(annotation));
        match &self.node_netns {
            Some(path) => routing.with_node_netns(path),
            None => routing,
        }
    }
}

/// Runs `work` on a fresh current-thread runtime (IO driver on: netlink sockets need it).
fn block_on<T>(work: impl Future<Output = Result<T, Error>>) -> Result<T, berth_cni::Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|source| berth_cni::Error::Io {
            context: "starting the async runtime".into(),
            source,
        })?;
    Ok(runtime.block_on(work)?)
}

fn attachment(r: &AttachmentRequest) -> Attachment<'_> {
    Attachment {
        container_id: &r.container_id,
        network: &r.config.name,
        netns: r.netns.as_deref(),
    }
}

fn keys(r: &berth_cni::NetworkConfig) -> Result<RouteConfig, berth_cni::Error> {
    let config: RouteConfig = r.plugin_keys()?;
    config.mode()?;
    Ok(config)
}

fn prev_result(r: &AttachmentRequest) -> Result<&CniResult, berth_cni::Error> {
    r.config.prev_result.as_ref().ok_or_else(|| {
        berth_cni::Error::InvalidConfig(
            "berth-route must be chained after a main plugin: the config has no prevResult".into(),
        )
    })
}

impl Plugin for BerthRoute {
    /// Berth's version and commit, in the log line of every call.
    fn version(&self) -> Option<&str> {
        Some(berth_cni::BUILD)
    }

    fn add(&self, r: &AttachmentRequest) -> Result<CniResult, berth_cni::Error> {
        let config = keys(&r.config)?;
        let prev = prev_result(r)?;
        if config.mode()? == Mode::Disabled {
            return Ok(prev.clone());
        }
        let nic = Nic::from_result(&r.ifname, prev);
        let routing = self.routing(r, &config);
        let plan = block_on(routing.add(&attachment(r), &nic))?;
        tracing::debug!(nic = %nic.name, "wired:\n{plan}");
        Ok(prev.clone())
    }

    fn del(&self, r: &AttachmentRequest) -> Result<(), berth_cni::Error> {
        let config = keys(&r.config)?;
        if config.mode()? == Mode::Disabled {
            return Ok(());
        }
        let nic = r
            .config
            .prev_result
            .as_ref()
            .map(|prev| Nic::from_result(&r.ifname, prev));
        let routing = self.routing(r, &config);
        block_on(routing.del(&attachment(r), &r.ifname, nic.as_ref()))
    }

    fn check(&self, r: &AttachmentRequest) -> Result<(), berth_cni::Error> {
        let config = keys(&r.config)?;
        let prev = prev_result(r)?;
        if config.mode()? == Mode::Disabled {
            return Ok(());
        }
        let nic = Nic::from_result(&r.ifname, prev);
        block_on(self.routing(r, &config).check(&attachment(r), &nic))
    }

    fn gc(&self, r: &NetworkRequest) -> Result<(), berth_cni::Error> {
        let config = keys(&r.config)?;
        let Some(valid) = &r.config.valid_attachments else {
            return Ok(());
        };
        let keep: BTreeSet<String> = valid.iter().map(|a| a.container_id.clone()).collect();
        let mut routing = PodRouting::new(config.settings(None));
        if let Some(path) = &self.node_netns {
            routing = routing.with_node_netns(path);
        }
        let deleted = block_on(routing.gc(&r.config.name, &keep))?;
        tracing::info!(?deleted, network = %r.config.name, "GC");
        Ok(())
    }

    /// Logs to `log_options.log_file` / `logOptions.logFile` ([`DEFAULT_LOG_FILE`] when
    /// neither is set), rotated by their size, age and count limits; to stderr when stdin is
    /// not a readable config.
    fn prepare(&self, stdin: &[u8]) {
        match serde_json::from_slice::<RouteConfig>(stdin) {
            Ok(config) => {
                let log = config.logging();
                let path = log
                    .log_file
                    .clone()
                    .unwrap_or_else(|| DEFAULT_LOG_FILE.into());
                init_file_logging_with(
                    path.as_ref(),
                    level_filter(log.log_level.as_deref()),
                    log.rotation(),
                );
            }
            Err(_) => {
                init_stderr_logging(level_filter(None));
            }
        }
    }
}
