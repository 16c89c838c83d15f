//! The one error type of `ipam-store-k8s`.
//!
//! [`KubeStore`](crate::KubeStore)'s `Store` methods answer with `ipam_core::Error`, like every
//! store; this type says why a store could not be made, and is the source of the
//! `ipam_core::Error::Backend` errors that are the store's own (a write of a kind it only
//! reads, a deadline that passed).

use std::path::PathBuf;
use std::time::Duration;

use ipam_core::Kind;

/// Errors of `ipam-store-k8s`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig file cannot be read or does not describe a usable cluster.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// What kube found wrong with it.
        #[source]
        source: kube::config::KubeconfigError,
    },

    /// Not in a pod, or its service account is not mounted: no cluster to reach without a
    /// kubeconfig.
    #[error("no kubeconfig given and not running in a pod ({0}): pass --kubeconfig PATH")]
    InCluster(#[source] kube::config::InClusterError),

    /// No client can be built from the configuration (TLS material, proxy settings).
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[source] kube::Error),

    /// The API server does not serve a kind: its CRD is not installed.
    #[error(
        "the API server does not serve {kind} ({api_version}): install Berth's CRDs with \
         `kubectl apply -f deploy/crds/` (or `berth crds | kubectl apply -f -`)"
    )]
    NotServed {
        /// The kind.
        kind: Kind,
        /// Its `apiVersion`.
        api_version: &'static str,
    },

    /// The API server could not be asked (unreachable, refused, no answer in time).
    #[error("cannot reach the API server: {0}")]
    Connect(#[source] ipam_core::Error),

    /// A write of a kind this store only reads (see `Store::writes`).
    #[error(
        "the Kubernetes store does not write {0} objects: they are the cluster's, written by \
         their users (kubectl)"
    )]
    ReadOnly(Kind),

    /// A request took longer than the store's deadline (see `KubeStore::deadline`).
    #[error("no answer within {0:?}")]
    DeadlineExceeded(Duration),

    /// The API server refused to store an object because it is too large: etcd takes objects
    /// up to `--max-request-bytes`, 1.5 MiB by default, which one SpiderIPPool reaches at about
    /// 7,200 allocation records (`tests/size.rs`). Retrying cannot help; nothing was written.
    #[error(
        "{object} is too large for the API server to store ({message}): etcd keeps objects up \
         to 1.5 MiB by default (--max-request-bytes), about 7,200 allocation records of one \
         pool; nothing was written. Split the pool into smaller ones"
    )]
    TooLarge {
        /// The object, as `SpiderIPPool "name"`.
        object: String,
        /// What the API server said.
        message: String,
    },

    /// A request of the webhook's own (its Secret, its configurations) failed.
    #[error("cannot {action}: {source}")]
    Api {
        /// What was asked, as "read the Secret berth-webhook-tls".
        action: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },

    /// The node agent cannot allocate for a pod: it does not exist, it is another incarnation
    /// than the runtime's, or it is bound to another node.
    #[error("pod {pod}: {reason}")]
    UnknownPod {
        /// `namespace/name`.
        pod: String,
        /// Why.
        reason: String,
    },

    /// The webhook's certificates cannot be made or read.
    #[error("webhook certificate: {0}")]
    Certificate(String),

    /// The webhook cannot start or serve (its address, its configuration).
    #[error("webhook: {0}")]
    Webhook(String),
}

impl Error {
    /// Whether trying again later may succeed: the API server could not be reached or asked
    /// in time, or answered that it is overloaded or failing (429, 5xx). A refusal (403, 404,
    /// 422) or a bad configuration is not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::DeadlineExceeded(_) => true,
            Error::Connect(e) => e.is_unavailable(),
            Error::Api { source, .. } => match source {
                kube::Error::Api(status) => status.code >= 500 || status.code == 429,
                other => crate::wire::is_transport(other),
            },
            _ => false,
        }
    }
}
