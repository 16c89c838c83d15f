//! The node agent (`berth agent`): it owns a data dir's store and serves `berth-ipam` and
//! the `berth` CLI over HTTP/1.1 + JSON on a unix socket.
//!
//! The socket is created with mode 0600 (the agent runs as root, like its clients); its
//! parent dir is created if missing and a stale socket file (nothing listening) is replaced.
//! While serving a data dir, the agent records its socket in `<data dir>/agent`
//! ([`record`]); embedded-mode plugins and the CLI that find a live record go through the
//! agent instead of waiting for the data dir's lock ([`open_data_dir`](crate::open_data_dir)).
//! On SIGTERM ([`termination_signal`]) the agent stops accepting, removes the record and the
//! socket, finishes the requests in flight and returns; since every store write is flushed
//! before it is acknowledged, a restarted agent has everything it acknowledged.
//!
//! Clients send one request per connection ([`AgentClient`]). Every body is JSON
//! (`Content-Type: application/json`); types are in [`protocol`].
//!
//! # Endpoints
//!
//! IPAM, in the spirit of Spiderpool's `/v1/ipam/ip` (same field names, Berth's additions
//! optional). Errors answer 400 (bad input) or 500 with a CNI error object
//! `{"cniVersion", "code", "msg", "details"?}` that the plugin prints as it is, code intact.
//!
//! | method and path | request | answer (200) |
//! |---|---|---|
//! | `GET /v1/ipam/healthy` | — | `{"status": "ok"}`; code 50 when the store does not answer (STATUS) |
//! | `POST /v1/ipam/ip` | [`AddArgs`](protocol::AddArgs) | [`AddResponse`](protocol::AddResponse) |
//! | `DELETE /v1/ipam/ip` | [`DelArgs`](protocol::DelArgs) | [`DelResponse`](protocol::DelResponse) |
//! | `POST /v1/ipam/check` | [`CheckArgs`](protocol::CheckArgs) | `{}`; code 105 when the IPs are not held |
//! | `POST /v1/ipam/gc` | [`NetworkGcArgs`](protocol::NetworkGcArgs) | [`GcResponse`](protocol::GcResponse) |
//! | `POST /v1/gc` | `{}` | [`GcResponse`](protocol::GcResponse) (`berth gc`: netns liveness) |
//!
//! ```text
//! POST /v1/ipam/ip
//! {"containerID": "4f9e1c0c", "ifName": "eth0", "netNamespace": "/var/run/netns/p1",
//!  "podNamespace": "default", "podName": "test-app-7d9f-x2x9k", "podUID": "0b6b…",
//!  "defaultIPv4IPPool": [], "defaultIPv6IPPool": [], "cleanGateway": false,
//!  "network": "macvlan-conf-ens192", "owner": "Deployment/test-app", "node": "node1"}
//! → 200
//! {"ips": [{"version": 4, "address": "10.6.168.171/16", "nic": "eth0",
//!           "ipPool": "auto4-test-app-eth0-1a2b3", "gateway": "10.6.0.1",
//!           "enableIPConflictDetection": true}],
//!  "routes": [{"ifName": "eth0", "dst": "0.0.0.0/0", "gw": "10.6.0.1"}]}
//! → 500
//! {"cniVersion": "1.1.0", "code": 100, "msg": "IP pools [\"auto4-…\"] of eth0 (IPv4) are exhausted; …"}
//!
//! DELETE /v1/ipam/ip
//! {"containerID": "4f9e1c0c", "ifName": "eth0", "podNamespace": "default",
//!  "podName": "test-app-7d9f-x2x9k", "podUID": "0b6b…", "netNamespace": "/var/run/netns/p1"}
//! → 200 {"released": [{"pool": "auto4-…", "ip": "10.6.168.171", "pod": "default/test-app-7d9f-x2x9k"}]}
//!
//! POST /v1/ipam/check
//! {"containerID": "4f9e1c0c", "ifName": "eth0", "podNamespace": "default",
//!  "podName": "test-app-7d9f-x2x9k", "ips": ["10.6.168.171"]}
//! → 200 {}
//!
//! POST /v1/ipam/gc
//! {"network": "macvlan-conf-ens192",
//!  "validAttachments": [{"containerID": "4f9e1c0c", "ifname": "eth0"}]}
//! → 200 {"released": [{"pool": "auto4-…", "ip": "10.6.168.172", "pod": "default/p2"}]}
//! ```
//!
//! Store: the six operations of [`ipam_core::store::Store`] on the agent's store, for
//! [`AgentStore`]. Kinds are named as in `kind:` (`SpiderIPPool`); keys are
//! `{"kind", "namespace"?, "name"}`. Errors answer 404 / 409 / 422 / 400 / 500 with a
//! [`StoreError`](protocol::StoreError) tagged by the `ipam_core::Error` variant:
//! `{"error": "NotFound" | "AlreadyExists" | "Conflict", "key": {…}, "message"}`,
//! `{"error": "RetriesExhausted", "key", "attempts", "message"}`,
//! `{"error": "Malformed", "kind", "name", "reason", "message"}`, `{"error": "Backend", "message"}`.
//!
//! | method and path | request | answer (200) |
//! |---|---|---|
//! | `POST /v1/store/get` | `{"key": {…}}` | `{"object": {…} \| null}` |
//! | `POST /v1/store/list` | `{"kind", "namespace"?, "selector"?: {"matchLabels", "matchExpressions"}}` | `{"items": [{…}]}` |
//! | `POST /v1/store/create` | `{"kind", "object": {…}}` | `{"object": {…}}` (as stored) |
//! | `POST /v1/store/update` | `{"kind", "object": {…}}` | `{"object": {…}}` |
//! | `POST /v1/store/update-status` | `{"kind", "object": {…}}` | `{"object": {…}}` |
//! | `POST /v1/store/delete` | `{"key": {…}, "precondition"?: "<resourceVersion>"}` | `{"deleted": "gone"}` or `{"deleted": "terminating", "object": {…}}` |
//!
//! A `berth` command that runs the engine on an [`AgentStore`] shares the store with the
//! agent's engine, as engines in several processes share a Kubernetes API server: each write
//! is checked against the object's version, but the agent's in-process serialisation of spec
//! writes (apply, reconcile, GC) does not extend to the CLI. `POST /v1/gc` runs GC inside the
//! agent instead.
//!
//! # Example
//!
//! ```no_run
//! # async fn agent() -> Result<(), cni_plugin::Error> {
//! use std::path::Path;
//! let shutdown = cni_plugin::agent::termination_signal().expect("signal handlers");
//! cni_plugin::agent::serve_data_dir(
//!     Path::new("/var/lib/berth"),
//!     Path::new(cni_plugin::agent::DEFAULT_SOCKET),
//!     shutdown,
//! )
//! .await
//! # }
//! ```

mod client;
pub mod protocol;
pub mod record;
mod server;
mod store;

pub use client::{AgentClient, Answer, DEFAULT_RECONNECT, DEFAULT_TIMEOUT};
pub use server::{
    AgentOptions, DataDirAgent, Listen, Listening, MAX_BODY, activated_listener, adopt, bind,
    bind_data_dir, bind_data_dir_on, serve, serve_data_dir, termination_signal,
};
pub use store::AgentStore;

/// Where `berth agent` listens by default, and where `berth-ipam` looks for it when its
/// config names neither a socket nor a data dir.
pub const DEFAULT_SOCKET: &str = "/run/berth/agent.sock";
