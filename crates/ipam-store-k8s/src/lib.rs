//! Berth on Kubernetes: Spiderpool's CRDs, generated from Rust types.
//!
//! In Kubernetes mode Berth keeps its objects where Spiderpool keeps them: custom resources of
//! the group `spiderpool.spidernet.io`, version `v2beta1`. A cluster that runs Spiderpool can
//! switch to Berth without touching its objects, because the API is the same one:
//!
//! - [`v2beta1`] mirrors Spiderpool v1.2's Go API types, field for field (JSON names, types,
//!   optional and required fields, `status.allocatedIPs` as a JSON document in a string), as
//!   kube resources usable with `kube::Api`.
//! - [`crds`] generates the four CustomResourceDefinitions from those types (kube's derive and
//!   schemars) and renders them as the YAML of `deploy/crds/`, which `berth crds` prints.
//!
//! The object model Berth computes with is `ipam_core`'s; it reads and writes the same JSON.
//! The `Store` on these resources is not here yet.
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

pub mod crds;
pub mod v2beta1;
