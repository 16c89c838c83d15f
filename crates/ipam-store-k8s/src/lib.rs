//! Berth on Kubernetes: Spiderpool's CRDs, generated from Rust types, and the `Store` on them.
//!
//! In Kubernetes mode Berth keeps its objects where Spiderpool keeps them: custom resources of
//! the group `spiderpool.spidernet.io`, version `v2beta1`. A cluster that runs Spiderpool can
//! switch to Berth without touching its objects, because the API is the same one:
//!
//! - [`v2beta1`] mirrors Spiderpool v1.2's Go API types, field for field (JSON names, types,
//!   optional and required fields, `status.allocatedIPs` as a JSON document in a string), as
//!   kube resources usable with `kube::Api`, plus two optional fields of Berth's own (below).
//! - [`crds`] generates the four CustomResourceDefinitions from those types (kube's derive and
//!   schemars) and renders them as the YAML of `deploy/crds/`, which `berth crds` prints.
//! - [`KubeStore`] is `ipam_core`'s [`Store`](ipam_core::store::Store) on the API server, so
//!   that Berth's engine runs unchanged on a cluster, in any number of processes at once.
//! - `webhook` (feature `webhook`) serves Spiderpool's mutating and validating admission
//!   webhooks with the engine's `admit`, the code of `berth apply`: `berth webhook`.
//! - [`pods`] is what the node agent knows of its node's pods (`berth agent --kubeconfig
//!   --node`), and [`controller`] sizes the applications' auto pools from one leader
//!   (`berth controller`); [`workloads`] reads the applications that are not Deployments or
//!   StatefulSets (ReplicaSets, DaemonSets, Jobs, CronJobs) for both.
//!
//! # The store
//!
//! Documents stay `serde_json::Value`s in `ipam_core`'s JSON, which is Spiderpool's: the store
//! translates nothing, it maps each trait method onto one or two API requests and each answer
//! onto the trait's errors (the `wire` module):
//!
//! | `Store` | API server |
//! |---|---|
//! | `get`, `list` | GET, a quorum read of etcd, or, with [`KubeStore::cached_reads`] (the agent's), at the version the store last saw of the object, from the API server's watch cache; LIST with a server-side `labelSelector`, in pages, sorted by namespace and name |
//! | `create` | POST (409 `AlreadyExists` → `AlreadyExists`) |
//! | `update` | PUT under the caller's `resourceVersion` (409 → `Conflict`); without one, under the stored one |
//! | `update_status` | PUT `/status` (SpiderSubnet, SpiderIPPool); for SpiderEndpoint, which has no status subresource, the stored object with the new status, PUT whole |
//! | `delete` | DELETE with the version as the server's precondition; the object it returns with `deletionTimestamp` and finalizers is `Terminating`, else `Gone` |
//! | `update_pool_records` | merge the records into the pool's `allocatedIPs` document as stored at the caller's version, PUT `/status` under that version: one write, and a stale version is a conflict, never a blind overwrite. The store keeps the last document it saw of each pool, so when the engine writes on top of what it read or wrote, that is the only request |
//! | `watch` | a watch of the kind from the newest resourceVersion the store has seen (the `watch` module) |
//!
//! The `resourceVersion` is the version, as the trait wants: opaque to the engine, changed by
//! every write. Finalizers, the status subresource and the preconditions are the API server's
//! own, which the conformance suite of `ipam_core` checks against a real one
//! (`tests/conformance.rs`).
//!
//! **Kinds.** SpiderSubnet, SpiderIPPool and SpiderReservedIP are cluster-scoped and
//! SpiderEndpoint namespaced, as in Spiderpool. Deployments and StatefulSets are the cluster's
//! apps/v1 objects: the store reads and watches them but never writes them
//! ([`Store::writes`](ipam_core::store::Store::writes) says so; a write fails with
//! [`Error::ReadOnly`] as its source).
//!
//! **Berth's two fields.** The engine keeps two things Spiderpool's API has no field for: a
//! pool's `status.lastAllocatedIP` (where round-robin allocation resumes, so a freed IP is not
//! reused at once) and an endpoint's `status.current.containerID` (how a retried CNI ADD finds
//! its IPs). Berth's CRDs add both as optional strings; every Spiderpool field is unchanged.
//! They are CRD fields rather than annotations because they change with the status: the pool's
//! with every allocation, written through `/status`, which ignores metadata, so an annotation
//! would cost a second write (and a second conflict window) per allocation. Objects stay
//! interchangeable: Spiderpool's objects are valid here, and Spiderpool's clients ignore the two
//! fields (under Spiderpool's CRDs the API server drops them, and Berth then starts from a
//! pool's first IP and treats an endpoint as of an unknown container).
//!
//! **Permissions.** The store's identity needs, in group `spiderpool.spidernet.io`, `get`,
//! `list`, `watch`, `create`, `update` and `delete` on `spidersubnets`, `spiderippools`,
//! `spiderendpoints` and `spiderreservedips`, and `update` on `spidersubnets/status` and
//! `spiderippools/status`; in group `apps`, `get`, `list` and `watch` on `deployments` and
//! `statefulsets`.
//!
//! **Failures.** Every store method gives up after a deadline ([`DEFAULT_DEADLINE`], 8 s;
//! [`KubeStore::deadline`]) whatever the client's timeouts, so an unreachable, paused or
//! black-holed API server is an error, never a hang. Such an error, and the server's own
//! "unavailable" answers (429, 5xx), are `ipam_core::Error::Backend` errors for which
//! [`ipam_core::Error::is_unavailable`] is true: errors to answer with CNI code 11, "try again
//! later". As with any store, a write that failed so may have happened: callers re-read.
//!
//! ```no_run
//! use ipam_core::store::TypedStore;
//! use ipam_core::{SpiderIPPool, ips};
//! use ipam_store_k8s::KubeStore;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let store = KubeStore::from_kubeconfig("/etc/kubernetes/admin.conf").await?;
//! let pool = SpiderIPPool::new("pool-a", "10.6.0.0/16".parse()?, ips!["10.6.168.171-10.6.168.180"]);
//! let stored = store.create_as(&pool).await?; // `kubectl get sp pool-a` shows it
//! assert!(stored.metadata.resource_version.is_some());
//! # Ok(())
//! # }
//! ```
//!
//! And the CRDs:
//!
//! ```
//! use ipam_store_k8s::crds;
//!
//! let crds = crds::all();
//! let names: Vec<_> = crds.iter().map(|c| c.spec.names.kind.as_str()).collect();
//! assert_eq!(names, ["SpiderEndpoint", "SpiderIPPool", "SpiderReservedIP", "SpiderSubnet"]);
//! assert_eq!(crds::file_name(&crds[1]), "spiderpool.spidernet.io_spiderippools.yaml");
//! assert!(crds::yaml().contains("shortNames:\n    - sp\n"));
//! ```

#![forbid(unsafe_code)]

pub mod controller;
pub mod crds;
mod error;
#[cfg(feature = "webhook")]
pub mod metrics;
pub mod pods;
mod store;
pub mod v2beta1;
mod watch;
#[cfg(feature = "webhook")]
pub mod webhook;
mod wire;
pub mod workloads;

pub use error::Error;
/// The kube-rs this crate is built on, for callers that pass it clients.
pub use kube;
pub use store::{DEFAULT_DEADLINE, FORBIDDEN_GRACE, KubeStore};
