//! `berth`: kubectl-like commands on Berth's embedded store.
//!
//! ```text
//! berth apply -f FILE|-            create or update objects from YAML/JSON (several documents)
//! berth get KIND [NAME] [-o wide|json|yaml] [-l SELECTOR]
//! berth describe sp|ss NAME       free IPs, holders, terminating state
//! berth scale deployment|statefulset NAME --replicas N
//! berth delete KIND NAME...
//! berth gc                         free what dead containers hold, repair after crashes
//! berth agent [--socket PATH]      serve the data dir to berth-ipam (and to berth) on a socket
//! berth agent --kubeconfig PATH --node NAME [--socket PATH]   serve a cluster node's pods
//!   [--enable-ip-conflict-detection] [--enable-gateway-detection]   the networks' defaults
//! berth crds [--dir DIR]           the Kubernetes CRDs (deploy/crds/*.yaml), or write them to DIR
//! berth controller [--kubeconfig PATH] [--lease NS/NAME]   size auto pools on a cluster, one leader
//! berth webhook [--kubeconfig PATH] [--listen ADDR] [--url URL | --service NS/NAME[:PORT]]
//!                                  Spiderpool's admission webhooks, answered as `apply` answers
//! ```
//!
//! `get` and `describe` read a cluster instead with `--kubeconfig PATH` (before or after the
//! command; a `KUBECONFIG` in the environment alone never switches, so a node's embedded store
//! does not silently vanish from view); `agent --node` and `webhook` serve that cluster. Every other command, and these without the flag, works
//! on the store in `--data-dir` (or `BERTH_DATA_DIR`, default `/var/lib/berth`). The store has one owner at a time: while `berth agent` serves the data dir,
//! commands go through it; otherwise a second `berth` waits for the first to finish (saying
//! which pid holds the lock after a second), up to `--lock-timeout SECS`.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::core::engine::{Engine, GcReport};
use crate::core::store::{Store, TypedStore};
use crate::core::{
    Deployment, Error, Kind, LabelSelector, Object, ObjectKey, SpiderEndpoint, SpiderIPPool,
    SpiderReservedIP, SpiderSubnet, StatefulSet, WorkloadKind,
};
use crate::{manifest, table};
use berth_cni::error::chain;
use clap::{Parser, Subcommand, ValueEnum};

/// kubectl-like commands on Berth's embedded IPAM store.
#[derive(Parser, Debug)]
#[command(name = "berth", version = berth_cni::BUILD, about, long_about = None)]
struct Cli {
    /// Where the store lives.
    #[arg(
        long,
        global = true,
        env = "BERTH_DATA_DIR",
        default_value = "/var/lib/berth"
    )]
    data_dir: PathBuf,

    /// How long to wait, in seconds, for another process that holds the data dir's lock (a
    /// running `berth` or `berth-ipam`) before giving up.
    #[arg(
        long,
        global = true,
        env = "BERTH_LOCK_TIMEOUT",
        value_name = "SECS",
        default_value_t = 30
    )]
    lock_timeout: u64,

    /// Read the cluster of this kubeconfig (its current context) instead of the data dir:
    /// `get` and `describe`; `agent` (with --node) and `webhook` serve that cluster. The
    /// environment's KUBECONFIG is never used by itself.
    #[arg(long, global = true, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,

    /// Namespace of Deployments, StatefulSets and SpiderEndpoints.
    #[arg(short = 'n', long, global = true, default_value = "default")]
    namespace: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create or update objects (SpiderSubnet, SpiderIPPool, SpiderReservedIP, Deployment,
    /// StatefulSet) from YAML or JSON files; `-` reads standard input.
    Apply {
        /// Files to apply, in order.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<String>,
    },
    /// List objects, or show one.
    Get {
        /// spidersubnet|ss, spiderippool|sp, spiderendpoint|se, spiderreservedip|sr,
        /// deployment|deploy, statefulset|sts.
        kind: String,
        /// One object's name.
        name: Option<String>,
        /// Output format.
        #[arg(short = 'o', long)]
        output: Option<Output>,
        /// Only objects whose labels match, in kubectl's syntax: `a=b,c!=d`, `key`, `!key`,
        /// `key in (x,y)`, `key notin (x,y)`.
        #[arg(short = 'l', long)]
        selector: Option<String>,
    },
    /// Show one SpiderIPPool (sp) or SpiderSubnet (ss) in detail: its free IPs, who holds
    /// the others (a pool's pods, with container and NIC; a subnet's pools), and whether it
    /// is terminating.
    Describe {
        /// spiderippool|sp or spidersubnet|ss.
        kind: String,
        /// The object's name.
        name: String,
    },
    /// Set the replica count of a Deployment or StatefulSet and resize its auto pools.
    Scale {
        /// deployment|deploy or statefulset|sts.
        kind: String,
        /// The workload.
        name: String,
        /// The new replica count.
        #[arg(long)]
        replicas: u32,
    },
    /// Delete objects. Pools holding IPs stay terminating until their IPs are released.
    Delete {
        /// The kind (see `get`).
        kind: String,
        /// Names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Free IPs whose container is gone (its netns path no longer exists), shrink pools that
    /// waited for it, and repair what a crash left half-done.
    Gc,
    /// Serve the data dir on a unix socket: berth-ipam calls (agent mode) and berth commands
    /// then go through this process, which holds the store. Stops on SIGTERM or SIGINT.
    /// Under systemd socket activation (`LISTEN_FDS`, see deploy/systemd/) it serves the
    /// socket it is passed and leaves its file to systemd.
    Agent {
        /// The socket (created 0600); ignored when a socket is passed by socket activation.
        #[arg(long, default_value = cni_plugin::agent::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Probe every address berth-ipam hands out for a conflict (ARP / NDP) unless the
        /// network config's `enable_ip_conflict_detection` says otherwise.
        #[arg(long)]
        enable_ip_conflict_detection: bool,
        /// Ask every address's gateway before ADD answers unless the network config's
        /// `enable_gateway_detection` says otherwise.
        #[arg(long)]
        enable_gateway_detection: bool,
        /// Kubernetes mode: serve `/metrics`, `/healthz` and `/readyz` on this address (plain
        /// HTTP).
        #[arg(long, value_name = "ADDR", requires = "node")]
        metrics_listen: Option<std::net::SocketAddr>,
        /// Kubernetes mode: the node whose pods this agent serves; pods' labels, annotations and
        /// applications come from the API server, and the store is the cluster's (through
        /// --kubeconfig, or in a pod its service account).
        #[arg(long, value_name = "NAME")]
        node: Option<String>,
    },
    /// Serve Spiderpool's mutating and validating admission webhooks for SpiderSubnet,
    /// SpiderIPPool and SpiderReservedIP on a cluster: objects written with kubectl are
    /// completed and checked exactly as `berth apply` completes and checks them. Makes or loads
    /// its CA and certificate (in a Secret), renews them, and registers both webhook
    /// configurations with its CA bundle. Prints `berth webhook: ready ...` once the API server
    /// calls it. Reaches the cluster through --kubeconfig, or in a pod, its service account.
    /// Stops on SIGTERM or SIGINT.
    Webhook {
        #[command(flatten)]
        args: WebhookArgs,
    },
    /// Keep the auto pools of a cluster's Deployments and StatefulSets sized as their replicas
    /// change, reclaim them when they go, and free the IPs of pods that are gone (GC; needs
    /// --kubeconfig, or a pod's service account).
    /// Several may run: one leads, through a Lease; the others wait to take over. Prints
    /// `berth controller: leading` and `berth controller: following` as that changes. Stops on
    /// SIGTERM or SIGINT, giving the Lease up.
    Controller {
        /// The Lease (`NAMESPACE/NAME`).
        #[arg(long, default_value = "kube-system/berth-controller")]
        lease: String,
        /// This replica's name in the Lease. Default: `$POD_NAME` when set (give it the pod's
        /// name from the Downward API, as Spiderpool's controller does: a container restarted
        /// in the same pod then resumes its Lease at once instead of waiting it out), else
        /// host name and pid.
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
        /// How long the Lease holds after each renewal; a leader renews every third of it.
        #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
        lease_duration: Duration,
        /// How often the leader runs GC (freeing the IPs of pods that are gone), besides soon
        /// after each pod deletion.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        gc_period: Duration,
        /// How many applications the leader reconciles at once (each one by one worker at a
        /// time).
        #[arg(long, default_value_t = crate::k8s::controller::DEFAULT_WORKERS)]
        workers: usize,
        /// Do not reserve new pods' IPs before their ADDs. By default the leader records the
        /// IPs of the pods it sees created in the manual pools their `ippools` annotation
        /// names (one per NIC), one write per pool for many pods, and each ADD then writes
        /// only the pod's SpiderEndpoint; with this flag every ADD writes its pools itself.
        /// Auto pools are never reserved in.
        #[arg(long)]
        no_reserve_ahead: bool,
        /// Serve `/metrics`, `/healthz` and `/readyz` on this address (plain HTTP).
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<std::net::SocketAddr>,
        /// Also serve the admission webhook, on every replica (the webhook's flags below; a
        /// Deployment registers its Service with --service).
        #[arg(long)]
        webhook: bool,
        #[command(flatten, next_help_heading = "Webhook (with --webhook)")]
        webhook_args: WebhookArgs,
    },
    /// Print the CustomResourceDefinitions of SpiderEndpoint, SpiderIPPool, SpiderReservedIP
    /// and SpiderSubnet (Spiderpool's v2beta1 API) as one YAML stream: what deploy/crds/ holds.
    /// Needs no data dir.
    Crds {
        /// Write one file per kind into this directory instead (`berth crds --dir deploy/crds`
        /// regenerates the committed ones).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// How `berth webhook` (and `berth controller --webhook`) serves and registers itself.
#[derive(clap::Args, Debug)]
struct WebhookArgs {
    /// The address to serve HTTPS on (port 0: any free port, printed at start).
    #[arg(long, default_value = "0.0.0.0:9443")]
    listen: std::net::SocketAddr,
    /// Register this base URL (`https://HOST[:PORT]`) with the API server. Without it and
    /// --service, the listening address (which must then be one address, not 0.0.0.0).
    #[arg(long, conflicts_with = "service")]
    url: Option<String>,
    /// Register this Service (`NAMESPACE/NAME[:PORT]`, port 443 by default) instead.
    #[arg(long, value_name = "NAMESPACE/NAME[:PORT]")]
    service: Option<String>,
    /// The Secret that holds the CA and the serving certificate (`NAMESPACE/NAME`).
    #[arg(long, default_value = "kube-system/berth-webhook-tls")]
    secret: String,
    /// The name of the MutatingWebhookConfiguration and ValidatingWebhookConfiguration.
    #[arg(long, default_value = "berth-webhook")]
    configuration: String,
    /// How long a serving certificate is valid (the CA: ten times as long).
    #[arg(long, default_value = "365d", value_parser = humantime::parse_duration)]
    cert_validity: Duration,
    /// Renew a certificate this long before it expires.
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
    renew_before: Duration,
    /// Give up if the API server does not call the webhook within this after start.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    ready_timeout: Duration,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Output {
    Wide,
    Json,
    Yaml,
}

/// A failure of one command, printed as `error: ...`.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Core(#[from] Error),
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    #[error("{0}")]
    Usage(String),
    #[error("cannot read {file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Plugin(#[from] cni_plugin::Error),
    #[error(transparent)]
    Kube(#[from] crate::k8s::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} of the objects failed (see above)")]
    Partial(usize),
}

fn kind_of(s: &str) -> Result<Kind, CliError> {
    crate::table::kind_named(s).ok_or_else(|| {
        CliError::Usage(format!(
            "unknown kind {s:?}: use spidersubnet (ss), spiderippool (sp), spiderendpoint (se), \
             spiderreservedip (sr), deployment (deploy) or statefulset (sts)"
        ))
    })
}

fn key(kind: Kind, namespace: &str, name: &str) -> ObjectKey {
    if kind.is_namespaced() {
        ObjectKey::namespaced(kind, namespace, name)
    } else {
        ObjectKey::cluster(kind, name)
    }
}

async fn apply<S: Store>(
    engine: &Engine<S>,
    namespace: &str,
    files: &[String],
) -> Result<(), CliError> {
    // Every document is read before anything is written: garbage stores nothing.
    let mut objects = Vec::new();
    for f in files {
        let text = if f == "-" {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| CliError::Read {
                    file: "-".into(),
                    source: e,
                })?;
            s
        } else {
            std::fs::read_to_string(f).map_err(|e| CliError::Read {
                file: f.clone(),
                source: e,
            })?
        };
        objects.extend(manifest::parse(f, &text)?);
    }
    // kubectl refuses this too: an empty file is more likely a mistake than a wish.
    if objects.is_empty() {
        return Err(CliError::Usage(format!(
            "no objects passed to apply (in {})",
            files.join(", ")
        )));
    }
    let mut failed = 0;
    for mut obj in objects {
        use crate::core::engine::AnyObject;
        use crate::core::{Deployment, StatefulSet};
        if let AnyObject::Deployment(Deployment(w)) | AnyObject::StatefulSet(StatefulSet(w)) =
            &mut obj
        {
            w.metadata
                .namespace
                .get_or_insert_with(|| namespace.to_string());
        }
        let key = obj.key();
        match engine.apply(obj).await {
            Ok(outcome) => println!("{}", table::applied(&key, outcome)),
            // The store itself failed (a dead agent, a broken disk): every further object
            // would fail the same way, so stop and say why once.
            Err(e @ Error::Backend { .. }) => return Err(e.into()),
            Err(e) => {
                failed += 1;
                eprintln!("error: {}", chain(&e));
            }
        }
    }
    if failed > 0 {
        Err(CliError::Partial(failed))
    } else {
        Ok(())
    }
}

/// Prints objects of one kind as a table, a JSON/YAML List, or one object.
fn show<T: Object>(
    items: Vec<T>,
    single: bool,
    output: Option<Output>,
    table: impl Fn(&[T]) -> String,
) -> Result<(), CliError> {
    let values: Vec<serde_json::Value> = items
        .iter()
        .map(crate::core::store::encode)
        .collect::<Result<_, _>>()?;
    let doc = if single {
        values.into_iter().next().unwrap_or_default()
    } else {
        serde_json::json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": values})
    };
    match output {
        Some(Output::Json) => println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("JSON values serialize")
        ),
        Some(Output::Yaml) => print!(
            "{}",
            serde_yaml::to_string(&doc).expect("JSON values serialize")
        ),
        _ => {
            if items.is_empty() {
                eprintln!("No resources found.");
            } else {
                print!("{}", table(&items));
            }
        }
    }
    Ok(())
}

async fn fetch<S: Store, T: Object>(
    engine: &Engine<S>,
    kind: Kind,
    namespace: &str,
    name: Option<&str>,
    selector: Option<&LabelSelector>,
) -> Result<Vec<T>, CliError> {
    let store = engine.store();
    match name {
        Some(n) => {
            let ns = kind.is_namespaced().then_some(namespace);
            match store.get_as::<T>(ns, n).await? {
                Some(o) => Ok(vec![o]),
                None => Err(Error::NotFound(key(kind, namespace, n)).into()),
            }
        }
        None => Ok(store
            .list(kind, Some(namespace), selector)
            .await?
            .into_iter()
            .map(crate::core::store::decode::<T>)
            .collect::<Result<_, _>>()?),
    }
}

async fn get<S: Store>(
    engine: &Engine<S>,
    namespace: &str,
    kind: Kind,
    name: Option<&str>,
    output: Option<Output>,
    selector: Option<&str>,
) -> Result<(), CliError> {
    let selector = match selector {
        Some(_) if name.is_some() => {
            return Err(CliError::Usage(
                "name cannot be provided when a selector is specified".into(),
            ));
        }
        Some(text) => Some(text.parse::<LabelSelector>().map_err(CliError::Usage)?),
        None => None,
    };
    let selector = selector.as_ref();
    let single = name.is_some();
    let wide = output == Some(Output::Wide);
    match kind {
        Kind::SpiderSubnet => show(
            fetch::<_, SpiderSubnet>(engine, kind, namespace, name, selector).await?,
            single,
            output,
            table::subnets,
        ),
        Kind::SpiderIPPool => show(
            fetch::<_, SpiderIPPool>(engine, kind, namespace, name, selector).await?,
            single,
            output,
            |p| table::pools(p, wide),
        ),
        Kind::SpiderEndpoint => show(
            fetch::<_, SpiderEndpoint>(engine, kind, namespace, name, selector).await?,
            single,
            output,
            table::endpoints,
        ),
        Kind::SpiderReservedIP => show(
            fetch::<_, SpiderReservedIP>(engine, kind, namespace, name, selector).await?,
            single,
            output,
            table::reserved_ips,
        ),
        Kind::Deployment => show(
            fetch::<_, Deployment>(engine, kind, namespace, name, selector).await?,
            single,
            output,
            table::deployments,
        ),
        Kind::StatefulSet => show(
            fetch::<_, StatefulSet>(engine, kind, namespace, name, selector).await?,
            single,
            output,
            table::statefulsets,
        ),
    }
}

async fn delete<S: Store>(
    engine: &Engine<S>,
    namespace: &str,
    kind: Kind,
    names: &[String],
) -> Result<(), CliError> {
    let mut failed = 0;
    for name in names {
        let k = key(kind, namespace, name);
        match engine.delete(&k).await {
            Ok(()) => {
                let note = match kind {
                    Kind::SpiderIPPool => {
                        match engine.store().get_as::<SpiderIPPool>(None, name).await? {
                            Some(p) => format!(
                                " (terminating: {} IPs still held; it goes when they are released)",
                                p.allocated_count()
                            ),
                            None => String::new(),
                        }
                    }
                    Kind::SpiderSubnet => {
                        match engine.store().get_as::<SpiderSubnet>(None, name).await? {
                            Some(s) => format!(
                                " (terminating: pools {:?} hold its IPs)",
                                s.claims().keys().collect::<Vec<_>>()
                            ),
                            None => String::new(),
                        }
                    }
                    _ => String::new(),
                };
                println!("{} \"{name}\" deleted{note}", table::resource(kind));
            }
            Err(e @ Error::Backend { .. }) => return Err(e.into()),
            Err(e) => {
                failed += 1;
                eprintln!("error: {}", chain(&e));
            }
        }
    }
    if failed > 0 {
        Err(CliError::Partial(failed))
    } else {
        Ok(())
    }
}

async fn describe<S: Store>(engine: &Engine<S>, kind: Kind, name: &str) -> Result<(), CliError> {
    let store = engine.store();
    let not_found = || CliError::Core(Error::NotFound(ObjectKey::cluster(kind, name)));
    let text = match kind {
        Kind::SpiderIPPool => {
            let pool: SpiderIPPool = store.get_as(None, name).await?.ok_or_else(not_found)?;
            table::describe_pool(&pool, &engine.reserved_ips().await?)
        }
        Kind::SpiderSubnet => {
            let subnet: SpiderSubnet = store.get_as(None, name).await?.ok_or_else(not_found)?;
            let pools: Vec<SpiderIPPool> = store.list_as(None).await?;
            table::describe_subnet(&subnet, &pools, &engine.reserved_ips().await?)
        }
        other => {
            return Err(CliError::Usage(format!(
                "describe shows spiderippool (sp) and spidersubnet (ss), not {}",
                other.name()
            )));
        }
    };
    print!("{text}");
    Ok(())
}

fn print_gc(report: &GcReport) {
    for r in &report.released {
        println!(
            "released {} of pool {} (held by {})",
            r.ip, r.pool, r.holder
        );
    }
    for pod in &report.endpoints_deleted {
        println!("removed spiderendpoint {pod}");
    }
    for c in &report.claims_removed {
        println!(
            "returned the IPs claimed for missing pool {} to spidersubnet {}",
            c.pool, c.subnet
        );
    }
    if report == &GcReport::default() {
        println!("nothing to collect");
    }
}

async fn run<S: Store>(engine: Engine<S>, cli: &Cli) -> Result<(), CliError> {
    let ns = cli.namespace.as_str();
    match &cli.command {
        Command::Apply { files } => apply(&engine, ns, files).await,
        Command::Get {
            kind,
            name,
            output,
            selector,
        } => {
            get(
                &engine,
                ns,
                kind_of(kind)?,
                name.as_deref(),
                *output,
                selector.as_deref(),
            )
            .await
        }
        Command::Describe { kind, name } => describe(&engine, kind_of(kind)?, name).await,
        Command::Scale {
            kind,
            name,
            replicas,
        } => {
            let k = kind_of(kind)?;
            let wk = match k {
                Kind::Deployment => WorkloadKind::Deployment,
                Kind::StatefulSet => WorkloadKind::StatefulSet,
                _ => {
                    return Err(CliError::Usage(format!(
                        "{} cannot be scaled: only deployment and statefulset",
                        k.name()
                    )));
                }
            };
            engine.scale(wk, ns, name, *replicas).await?;
            println!("{}/{name} scaled", table::resource(k));
            Ok(())
        }
        Command::Delete { kind, names } => delete(&engine, ns, kind_of(kind)?, names).await,
        Command::Gc => {
            let report = engine.gc(&cni_plugin::NetnsLiveness).await?;
            print_gc(&report);
            Ok(())
        }
        Command::Agent { .. }
        | Command::Crds { .. }
        | Command::Webhook { .. }
        | Command::Controller { .. } => {
            unreachable!("served before a store is opened")
        }
    }
}

/// `berth crds`: the CRDs on stdout, or their files written into `dir`.
fn crds(dir: Option<&std::path::Path>) -> Result<(), CliError> {
    use ipam_store_k8s::crds;
    match dir {
        None => print!("{}", crds::yaml()),
        Some(dir) => {
            let written = crds::write_to(dir).map_err(|source| CliError::Write {
                path: dir.display().to_string(),
                source,
            })?;
            for path in written {
                println!("{}", path.display());
            }
        }
    }
    Ok(())
}

/// `berth gc` on a data dir an agent serves: the agent, which runs the containers' liveness on
/// its node, collects.
async fn gc_through_agent(socket: &std::path::Path) -> Result<(), CliError> {
    let answer = cni_plugin::agent::AgentClient::new(socket).gc().await?;
    for r in &answer.released {
        println!("released {} of pool {} (held by {})", r.ip, r.pool, r.pod);
    }
    if answer.released.is_empty() {
        println!("nothing to collect");
    }
    Ok(())
}

/// Runs the `berth` command line on this process's arguments.
pub fn main() -> ExitCode {
    main_from(std::env::args_os())
}

/// Runs the `berth` command line on `args` (the first is the program name): what a
/// multi-call binary that is also `berth` calls (`examples/cluster.rs`).
pub fn main_from<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::parse_from(args);
    // Generated from types: no store, no runtime.
    if let Command::Crds { dir } = &cli.command {
        return match crds(dir.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {}", chain(&e));
                ExitCode::FAILURE
            }
        };
    }
    // A socket passed by systemd socket activation, taken while this is the only thread.
    let activated = match &cli.command {
        Command::Agent { .. } => match cni_plugin::agent::activated_listener() {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    // One thread serves the agent's connections too: a request is a fraction of a millisecond
    // of CPU between a read and a write, and the store's syncs run in place, where the
    // requests under way share them. A multi-threaded runtime cost each request twice
    // the context switches (a thread woken to accept, another to serve, a third for the sync)
    // and a tenth of a millisecond more CPU, back to back, on a 2-core node.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        if let Command::Agent {
            socket,
            enable_ip_conflict_detection,
            enable_gateway_detection,
            node,
            metrics_listen,
        } = &cli.command
        {
            log_to_stderr();
            let stop = cni_plugin::agent::termination_signal()
                .map_err(|e| CliError::Usage(format!("cannot watch for SIGTERM: {e}")))?;
            let detection = cni_plugin::ipam::probe::Detection {
                ip_conflict: *enable_ip_conflict_detection,
                gateway: *enable_gateway_detection,
            };
            match (&cli.kubeconfig, node) {
                // --node alone: in a pod of the DaemonSet, with its service account.
                (_, Some(node)) => {
                    // Each ADD's selection lists every pool: from a watch, not the API server;
                    // and its reads of what it saw come from the API server's watch cache.
                    let store = cluster_store(&cli)
                        .await?
                        .caching_pool_lists()
                        .cached_reads();
                    return cluster_agent(
                        store,
                        node,
                        socket,
                        activated,
                        detection,
                        *metrics_listen,
                        stop,
                    )
                    .await;
                }
                (Some(_), None) => {
                    return Err(CliError::Usage(
                        "berth agent --kubeconfig serves one node of the cluster: name it with \
                         --node NAME (in a DaemonSet, the pod's spec.nodeName)"
                            .into(),
                    ));
                }
                (None, None) => {}
            }
            let (listen, how) = match activated {
                Some(listener) => (
                    cni_plugin::agent::Listen::Activated(listener),
                    " (socket activated)",
                ),
                None => (cni_plugin::agent::Listen::Bind(socket.clone()), ""),
            };
            let bound = cni_plugin::agent::bind_data_dir_on(&cli.data_dir, listen)
                .await?
                .with_detection(detection);
            // Printed once the socket listens: whoever started the agent can wait for it.
            println!(
                "berth agent: serving {} on {}{how}",
                cli.data_dir.display(),
                bound.socket().display()
            );
            bound.serve(stop).await?;
            return Ok(());
        }
        if let Command::Webhook { .. } = &cli.command {
            return webhook(&cli).await;
        }
        if let Command::Controller { .. } = &cli.command {
            return controller(&cli).await;
        }
        if let Some(kubeconfig) = &cli.kubeconfig {
            if !matches!(cli.command, Command::Get { .. } | Command::Describe { .. }) {
                return Err(CliError::Usage(
                    "--kubeconfig works with get, describe, agent --node and webhook; change a \
                     cluster's objects with kubectl, which Berth's admission webhook checks as \
                     berth apply does"
                        .into(),
                ));
            }
            let store = crate::k8s::KubeStore::from_kubeconfig(kubeconfig).await?;
            return run(Engine::new(store), &cli).await;
        }
        let store = open(&cli).await?;
        if let (Command::Gc, Some(socket)) = (&cli.command, store.agent_socket()) {
            let socket = socket.to_path_buf();
            return gc_through_agent(&socket).await;
        }
        run(Engine::new(store), &cli).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Partial(_)) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            if lock_timed_out(&e) {
                eprintln!(
                    "(berth waits --lock-timeout SECS, or BERTH_LOCK_TIMEOUT, for the lock: {} s now)",
                    cli.lock_timeout
                );
            }
            ExitCode::FAILURE
        }
    }
}

/// The Kubernetes-mode agent's pod facts: [`crate::k8s::pods::NodePods`], its errors as the
/// plugin's (code 109 for a pod it cannot serve, 11 when the API server cannot say).
struct ClusterPods(crate::k8s::pods::NodePods);

#[async_trait::async_trait]
impl cni_plugin::ipam::ops::PodSource for ClusterPods {
    async fn pod(
        &self,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Result<crate::PodContext, cni_plugin::Error> {
        use crate::k8s::Error as K;
        self.0
            .context(namespace, name, uid)
            .await
            .map_err(|e| match e {
                K::UnknownPod { .. } => cni_plugin::Error::UnknownPod(e.to_string()),
                e if e.is_retryable() => cni_plugin::Error::Ipam(Error::unavailable(
                    format!("read the pod {namespace}/{name}"),
                    e,
                )),
                e => cni_plugin::Error::Store {
                    msg: format!("cannot read the pod {namespace}/{name}"),
                    source: Some(Box::new(e)),
                },
            })
    }

    async fn leaving(
        &self,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Result<bool, cni_plugin::Error> {
        // When the API server cannot say, the DEL releases its own NIC only.
        Ok(self.0.leaving(namespace, name, uid).await.unwrap_or(false))
    }
}

/// `berth agent [--kubeconfig PATH] --node NAME`: serves the node's pods with the cluster's
/// store until `stop`.
async fn cluster_agent(
    store: crate::k8s::KubeStore,
    node: &str,
    socket: &std::path::Path,
    activated: Option<std::os::unix::net::UnixListener>,
    detection: cni_plugin::ipam::probe::Detection,
    metrics_listen: Option<std::net::SocketAddr>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), CliError> {
    let pods = crate::k8s::pods::NodePods::start(
        store.client().clone(),
        node,
        crate::k8s::DEFAULT_DEADLINE,
    )
    .await;
    let listening = match activated {
        Some(listener) => cni_plugin::agent::adopt(listener, None)?,
        None => {
            cni_plugin::agent::bind(&cni_plugin::agent::AgentOptions {
                socket: socket.to_path_buf(),
                data_dir: None,
            })
            .await?
        }
    };
    let listening = listening
        .with_detection(detection)
        .with_pods(node, std::sync::Arc::new(ClusterPods(pods)));
    // Printed once the socket listens: whoever started the agent can wait for it.
    println!(
        "berth agent: serving node {node} of the cluster on {}",
        listening.socket().display()
    );
    let workloads = crate::k8s::workloads::KubeWorkloads::new(store.client().clone());
    // The controller makes and sizes auto pools; an ADD that comes first waits for them.
    let config = crate::core::engine::EngineConfig {
        auto_pool_wait: Some(AGENT_AUTO_POOL_WAIT),
        ..Default::default()
    };
    let engine =
        std::sync::Arc::new(Engine::with_config(store, config).with_workload_source(workloads));
    let stop = futures::FutureExt::shared(Box::pin(stop));
    let metrics = async {
        match metrics_listen {
            Some(listen) => crate::k8s::metrics::Metrics::new(engine.clone(), None)
                .serve(listen, stop.clone())
                .await
                .map_err(CliError::from),
            None => Ok(()),
        }
    };
    let serve = async {
        listening
            .serve(engine.clone(), stop.clone())
            .await
            .map_err(CliError::from)
    };
    tokio::try_join!(serve, metrics)?;
    Ok(())
}

/// How long an ADD on a cluster node waits for the controller to make its application's
/// auto pool, before it fails with "try again later" (CNI code 11) and the runtime retries.
const AGENT_AUTO_POOL_WAIT: Duration = Duration::from_secs(20);

/// Logs of the long-running commands (`agent`, `controller`, `webhook`) go to stderr, at
/// `RUST_LOG`'s level (`info` by default): the container runtime or journald keeps them.
fn log_to_stderr() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
}

/// The cluster's store, from --kubeconfig or else the pod's service account.
async fn cluster_store(cli: &Cli) -> Result<crate::k8s::KubeStore, CliError> {
    Ok(match &cli.kubeconfig {
        Some(path) => crate::k8s::KubeStore::from_kubeconfig(path).await?,
        None => crate::k8s::KubeStore::in_cluster().await?,
    })
}

/// `berth controller`: leads or waits until SIGTERM or SIGINT.
async fn controller(cli: &Cli) -> Result<(), CliError> {
    use crate::k8s::controller::{Controller, Election};
    let Command::Controller {
        lease,
        identity,
        lease_duration,
        gc_period,
        workers,
        no_reserve_ahead,
        metrics_listen,
        webhook,
        webhook_args,
    } = &cli.command
    else {
        unreachable!("called for the controller command")
    };
    log_to_stderr();
    let (namespace, name) = lease
        .split_once('/')
        .ok_or_else(|| CliError::Usage(format!("--lease {lease:?} is not NAMESPACE/NAME")))?;
    if *lease_duration < Duration::from_secs(3) {
        return Err(CliError::Usage(
            "--lease-duration must be at least 3s: a leader renews every third of it".into(),
        ));
    }
    let identity = identity.clone().unwrap_or_else(|| {
        format!(
            "{}-{}",
            cni_plugin::ipam::ops::node_name(),
            std::process::id()
        )
    });
    // Checked before the cluster is asked anything.
    let webhook_options = webhook.then(|| webhook_args.options()).transpose()?;
    let store = cluster_store(cli).await?;
    let client = store.client().clone();
    let election = Election::new(client.clone(), namespace, name, &identity, *lease_duration);
    let workloads = crate::k8s::workloads::KubeWorkloads::new(client.clone());
    let engine = std::sync::Arc::new(Engine::new(store).with_workload_source(workloads));
    let controller = Controller::new(client.clone(), engine.clone(), election)
        .gc_every(*gc_period)
        .workers(*workers)
        .reserve_ahead(!*no_reserve_ahead);
    let stop = cni_plugin::agent::termination_signal()
        .map_err(|e| CliError::Usage(format!("cannot watch for SIGTERM: {e}")))?;
    let stop = futures::FutureExt::shared(Box::pin(stop));
    println!("berth controller: {identity} waiting for the Lease {lease}");
    let leader = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lead = async {
        controller
            .run(stop.clone(), |leading| {
                leader.store(leading, std::sync::atomic::Ordering::Relaxed);
                println!(
                    "berth controller: {}",
                    if leading { "leading" } else { "following" }
                )
            })
            .await
            .map_err(CliError::from)
    };
    let metrics = async {
        match metrics_listen {
            Some(listen) => crate::k8s::metrics::Metrics::new(engine.clone(), Some(leader.clone()))
                .serve(*listen, stop.clone())
                .await
                .map_err(CliError::from),
            None => Ok(()),
        }
    };
    let webhook = async {
        match webhook_options {
            // Every replica serves the webhook; only the leader writes.
            // Its own engine: admissions list every pool from a watch, but check a pool that
            // takes new IPs against the API server's listing.
            Some(options) => {
                webhook_args
                    .serve(options, client, webhook_engine(cli).await?, stop.clone())
                    .await
            }
            None => Ok(()),
        }
    };
    tokio::try_join!(lead, metrics, webhook)?;
    Ok(())
}

/// `berth webhook`: serves until SIGTERM or SIGINT.
impl WebhookArgs {
    /// The webhook's options, checked.
    fn options(&self) -> Result<crate::k8s::webhook::Options, CliError> {
        use crate::k8s::webhook::{Options, Reach};
        let WebhookArgs {
            listen,
            url,
            service,
            secret,
            configuration,
            cert_validity,
            renew_before,
            ready_timeout: _,
        } = self;
        let (secret_namespace, secret_name) = secret
            .split_once('/')
            .ok_or_else(|| CliError::Usage(format!("--secret {secret:?} is not NAMESPACE/NAME")))?;
        let reach = match (url, service) {
            (Some(url), _) => Reach::Url(url.clone()),
            (None, Some(service)) => {
                let bad = || {
                    CliError::Usage(format!(
                        "--service {service:?} is not NAMESPACE/NAME[:PORT]"
                    ))
                };
                let (namespace, rest) = service.split_once('/').ok_or_else(bad)?;
                let (name, port) = match rest.split_once(':') {
                    Some((name, port)) => (name, port.parse().map_err(|_| bad())?),
                    None => (rest, 443),
                };
                Reach::Service {
                    namespace: namespace.into(),
                    name: name.into(),
                    port,
                }
            }
            (None, None) => Reach::Listen,
        };
        if renew_before >= cert_validity {
            return Err(CliError::Usage(format!(
                "--renew-before ({}) must be shorter than --cert-validity ({})",
                humantime::format_duration(*renew_before),
                humantime::format_duration(*cert_validity)
            )));
        }
        Ok(Options {
            listen: *listen,
            reach,
            secret_namespace: secret_namespace.into(),
            secret_name: secret_name.into(),
            configuration: configuration.clone(),
            validity: *cert_validity,
            renew_before: *renew_before,
        })
    }

    /// Binds and registers the webhook with `options` (from [`WebhookArgs::options`]), says
    /// so, and serves it until `stop`.
    async fn serve<S: crate::core::store::Store + 'static>(
        &self,
        options: crate::k8s::webhook::Options,
        client: crate::k8s::kube::Client,
        engine: std::sync::Arc<Engine<S>>,
        stop: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), CliError> {
        let webhook = crate::k8s::webhook::Webhook::bind(client, engine, options).await?;
        // Printed once bound: whoever started the webhook learns the port (--listen ...:0).
        println!(
            "berth webhook: listening on {}, registered as {}",
            webhook.local_addr(),
            webhook.endpoint()
        );
        webhook
            .serve(
                stop,
                || println!("berth webhook: ready, the API server calls it"),
                self.ready_timeout,
            )
            .await?;
        Ok(())
    }
}

async fn webhook(cli: &Cli) -> Result<(), CliError> {
    let Command::Webhook { args } = &cli.command else {
        unreachable!("called for the webhook command")
    };
    log_to_stderr();
    // Checked before the cluster is asked anything.
    let options = args.options()?;
    let engine = webhook_engine(cli).await?;
    let client = engine.store().client().clone();
    let stop = cni_plugin::agent::termination_signal()
        .map_err(|e| CliError::Usage(format!("cannot watch for SIGTERM: {e}")))?;
    args.serve(options, client, engine, stop).await
}

/// The engine that answers admissions (`berth webhook`, `berth controller --webhook`). Each
/// admission of a pool checks it against every pool: its listings come from a watch, not the
/// API server (as Spiderpool's webhook reads its informer cache). Listing them all twice per
/// write made each auto pool's creation wait hundreds of milliseconds on a cluster of
/// hundreds. A pool that takes new IPs, but for an auto pool, is checked against the API
/// server's listing (`Store::list_current`): the watch may not show a pool of a moment ago.
async fn webhook_engine(
    cli: &Cli,
) -> Result<std::sync::Arc<Engine<crate::k8s::KubeStore>>, CliError> {
    let store = cluster_store(cli).await?.caching_pool_lists();
    Ok(std::sync::Arc::new(Engine::new(store)))
}

/// Opens the data dir, saying on stderr, once, who holds its lock when that takes about a
/// second: without it a busy data dir looks like a hang.
async fn open(cli: &Cli) -> Result<cni_plugin::DataDirStore, CliError> {
    let options = cni_plugin::DataDirOptions {
        lock_timeout: Duration::from_secs(cli.lock_timeout),
        ..Default::default()
    };
    let mut said = false;
    let store = cni_plugin::open_data_dir_waiting(&cli.data_dir, &options, |wait| {
        if !said {
            said = true;
            let holder = wait
                .holder
                .map_or("another process".to_string(), |pid| format!("pid {pid}"));
            eprintln!(
                "berth: {holder} holds the lock of the data dir {} ({}); waiting for it, up to \
                 {} s (--lock-timeout)",
                cli.data_dir.display(),
                cli.data_dir.join(crate::sled::LOCK_FILE).display(),
                cli.lock_timeout
            );
        }
    })
    .await?;
    Ok(store)
}

/// Whether `err` is a wait for the data dir's lock that ran out.
fn lock_timed_out(err: &CliError) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        if matches!(
            e.downcast_ref::<crate::sled::OpenError>(),
            Some(crate::sled::OpenError::Locked { .. })
        ) {
            return true;
        }
        next = e.source();
    }
    false
}
