//! A real Kubernetes control plane for Berth's tests: an envtest for Rust, with nodes.
//!
//! Berth's Kubernetes store, agent and controller must be proven against the real API server, not a
//! fake that agrees with whatever we believe about resourceVersion conflicts, watches, finalizers,
//! admission and the status subresource. [`Cluster::start`] runs one in a temporary directory:
//!
//! | component | what it is here |
//! |---|---|
//! | etcd 3.7 | one member, fsync on, as in production |
//! | kube-apiserver 1.37 | RBAC, admission webhooks enabled, a serving certificate for `127.0.0.1` |
//! | kube-controller-manager | every controller (`--controllers=*`): Deployments make ReplicaSets make Pods |
//! | kube-scheduler | binds pods to the simulated nodes |
//! | kwok | keeps N simulated nodes Ready (node stages only) |
//! | kubelet stand-in ([`kubelet`]) | one per node: runs each bound pod's CNI plugins and writes its status |
//! | fault [`Proxy`] | in front of the API server: latency, resets, black holes, lost acknowledgements |
//!
//! The Go components are built from their modules by `scripts/kube-testbin` (`testbed/kube`, one
//! multi-call binary) the first time a process needs them; see [`binaries`]. Certificates are made
//! here ([`pki`]). Everything listens on 127.0.0.1 on free ports, and nothing dials anywhere else:
//! simulated nodes have 127.0.1.x addresses, and admission webhooks are registered by
//! `url: https://127.0.0.1:<port>/...`, never by a Service (the API server would dial a ClusterIP).
//!
//! ```no_run
//! # async fn example() -> Result<(), kube_testbed::Error> {
//! use k8s_openapi::api::core::v1::Node;
//! use kube::api::{Api, ListParams};
//! use kube_testbed::{Cluster, Options};
//!
//! let cluster = Cluster::start(Options::default().nodes(3)).await?;
//! let nodes: Api<Node> = Api::all(cluster.client()?);
//! assert_eq!(nodes.list(&ListParams::default()).await.unwrap().items.len(), 3);
//! cluster.stop(); // or drop it
//! # Ok(())
//! # }
//! ```
//!
//! # Clean-up
//!
//! Dropping a [`Cluster`] (or [`Cluster::stop`]) ends its processes and removes its directory; a
//! failing test gets the end of each component's log printed and the whole logs kept under
//! `target/kube/logs/`. The components run in a process group led by a small reaper process that
//! holds a pipe from the test process: when that pipe closes (the test process exits, panics, or is
//! killed, SIGKILL and Ctrl-C included) the reaper ends the group and removes the directory. That
//! is what makes a [`SharedCluster`] in a `static`, which is never dropped, safe.
//!
//! # Faults
//!
//! [`Cluster::pause_apiserver`] / [`Cluster::resume_apiserver`] (SIGSTOP/SIGCONT),
//! [`Cluster::kill_apiserver`] / [`Cluster::restart_apiserver`], the same for etcd, and the
//! [`Proxy`] for clients pointed at it ([`Cluster::proxy_kubeconfig`]).

#![forbid(unsafe_code)]

pub mod binaries;
mod cluster;
pub mod cni;
mod error;
pub mod kubelet;
pub mod multus;
pub mod pki;
mod process;
mod proxy;

pub use cluster::{
    Cluster, Options, SharedCluster, SimNode, TestNamespace, config_from, unique_name,
};
pub use cni::{Attachment, NoIpam, PodNetwork};
pub use error::Error;
pub(crate) use error::io_error;
pub use kubelet::KubeletStats;
pub use pki::Identity;
pub use proxy::{LostAck, Proxy};
