//! `berth webhook`: Spiderpool's mutating and validating admission webhooks for SpiderSubnet,
//! SpiderIPPool and SpiderReservedIP, answered by the same code as `berth apply`
//! ([`Engine::admit`]).
//!
//! # What it does
//!
//! - **Mutating** (`/mutate`): the object as `berth apply` would store it (`ipVersion` derived,
//!   labels and finalizer set, ranges merged, a pool bound to its subnet and given its gateway
//!   and routes), sent back as a JSON patch. The status is never patched.
//! - **Validating** (`/validate`): the same check on the object after every mutating webhook
//!   ran: overlaps, gateways and routes outside the subnet, allocated IPs removed, immutable
//!   fields changed, Spiderpool's `podAffinity` and ownerReference rules. A refusal carries the
//!   engine's message, which `kubectl` prints after "denied the request:".
//!
//! Both are registered for CREATE and UPDATE of the three kinds only, `failurePolicy: Fail`
//! (nothing unchecked gets in while the webhook is down) and `sideEffects: None`. The `status`
//! subresource is not matched, so allocations (status writes) never wait for the webhook.
//!
//! # TLS
//!
//! At start the webhook reads, or makes, its CA and serving certificate in a Secret (the
//! `certs` module says which keys), registers both configurations with server-side apply
//! carrying the CA bundle, and keeps checking the Secret: a certificate near its end is renewed
//! (written back to the Secret, then served without a restart), one renewed by another replica
//! is picked up, and a changed CA bundle is registered again.
//!
//! # Reaching it
//!
//! [`Reach::Url`] registers `url: https://HOST:PORT/mutate` (and `/validate`): what a test
//! control plane on one machine needs, since its API server cannot dial a ClusterIP.
//! [`Reach::Service`] registers a Service reference, for the controller's Deployment. The
//! serving certificate names the URL's host, or the Service's DNS names.
//!
//! # Permissions
//!
//! Besides the store's ([`KubeStore`](crate::KubeStore)): `get`, `create` and `update` on
//! `secrets` in the Secret's namespace; `get`, `create` and `patch` on
//! `mutatingwebhookconfigurations` and `validatingwebhookconfigurations` (group
//! `admissionregistration.k8s.io`).

mod certs;
mod register;
mod server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ipam_core::engine::Engine;
use ipam_core::store::Store;

pub use server::review;

use crate::Error;

/// How the API server reaches the webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    /// This `https://HOST[:PORT]` base URL; `/mutate` and `/validate` are appended.
    Url(String),
    /// The address the webhook listens on, as `https://IP:PORT` (a test control plane on the
    /// same machine; the listen address must then not be unspecified).
    Listen,
    /// A Service in front of the webhook.
    Service {
        /// The Service's namespace.
        namespace: String,
        /// The Service's name.
        name: String,
        /// The Service's port.
        port: u16,
    },
}

/// Options of [`Webhook::bind`].
#[derive(Clone, Debug)]
pub struct Options {
    /// The address to listen on (port 0: any free port, see [`Webhook::local_addr`]).
    pub listen: SocketAddr,
    /// How the API server reaches the webhook.
    pub reach: Reach,
    /// The namespace of the certificates' Secret.
    pub secret_namespace: String,
    /// The certificates' Secret.
    pub secret_name: String,
    /// The name of both the MutatingWebhookConfiguration and the
    /// ValidatingWebhookConfiguration.
    pub configuration: String,
    /// How long a serving certificate is valid; the CA, ten times as long.
    pub validity: Duration,
    /// Renew a certificate with less than this left.
    pub renew_before: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
            reach: Reach::Listen,
            secret_namespace: "kube-system".into(),
            secret_name: "berth-webhook-tls".into(),
            configuration: "berth-webhook".into(),
            validity: Duration::from_secs(365 * 86_400),
            renew_before: Duration::from_secs(30 * 86_400),
        }
    }
}

/// The port the webhook listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 9443;

impl Options {
    /// The hosts the serving certificate must name.
    fn hosts(&self, bound: SocketAddr) -> Result<Vec<String>, Error> {
        Ok(match &self.reach {
            Reach::Url(url) => vec![host_of(url)?],
            Reach::Listen => {
                if bound.ip().is_unspecified() {
                    return Err(Error::Webhook(format!(
                        "the webhook listens on {bound}, which the API server cannot dial: give \
                         a URL or a Service to register, or listen on one address"
                    )));
                }
                vec![bound.ip().to_string()]
            }
            Reach::Service {
                namespace, name, ..
            } => vec![
                format!("{name}.{namespace}.svc"),
                format!("{name}.{namespace}.svc.cluster.local"),
            ],
        })
    }

    /// How often the Secret is read again: often enough to renew in time.
    fn check_every(&self) -> Duration {
        (self.renew_before / 4).clamp(Duration::from_secs(1), Duration::from_secs(600))
    }

    fn lifetimes(&self) -> certs::Lifetimes {
        certs::Lifetimes {
            validity: self.validity,
            renew_before: self.renew_before,
        }
    }
}

/// The host of an `https://` URL.
fn host_of(url: &str) -> Result<String, Error> {
    let bad = || Error::Webhook(format!("{url:?} is not an https://HOST[:PORT] URL"));
    let uri: http::Uri = url.parse().map_err(|_| bad())?;
    if uri.scheme_str() != Some("https") {
        return Err(bad());
    }
    let host = uri.host().ok_or_else(bad)?;
    Ok(host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string())
}

/// A webhook bound to its address, with its certificates and registration in place.
pub struct Webhook<S: Store> {
    server: server::Server<S>,
}

impl<S: Store + 'static> Webhook<S> {
    /// Listens on `options.listen`, reads or makes the certificates, and registers the webhook
    /// configurations. Objects are admitted by `engine`; `client` reaches the cluster for the
    /// Secret and the configurations.
    pub async fn bind(
        client: kube::Client,
        engine: Arc<Engine<S>>,
        options: Options,
    ) -> Result<Self, Error> {
        let server = server::Server::bind(client, engine, options).await?;
        Ok(Self { server })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The URL or Service the configurations name.
    pub fn endpoint(&self) -> String {
        self.server.endpoint()
    }

    /// Serves, in the background, until [`Webhook::ready`] succeeds: the API server sends it a
    /// dry-run SpiderReservedIP and gets it back mutated. Webhook configurations reach the API
    /// server's admission chain a moment after they are written; this waits for that, up to
    /// `timeout`. Then serves until `stop` completes.
    pub async fn serve(
        self,
        stop: impl std::future::Future<Output = ()> + Send,
        ready: impl FnOnce() + Send,
        timeout: Duration,
    ) -> Result<(), Error> {
        self.server.serve(stop, ready, timeout).await
    }
}
