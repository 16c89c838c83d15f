//! The one error type of `ipam-core`, shared by stores and the engine.
//!
//! Every refusal names the object and what is wrong with it, and where it helps, what to do.
//! Stores report their failures through the same type ([`Error::NotFound`],
//! [`Error::AlreadyExists`], [`Error::Conflict`], [`Error::Backend`]) so the engine can tell a
//! stale write from a broken disk without looking at strings.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::meta::{Kind, ObjectKey};
use crate::range::{IpFamily, IpSet};

/// Errors of `ipam-core`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An address list entry is not `a-b`, `a` or `net/len`.
    #[error("invalid IP range {input:?}: {reason}")]
    InvalidRange {
        /// The entry as written.
        input: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An object was refused by validation, as Spiderpool's webhook would refuse it.
    #[error("{kind} {name:?} is invalid: {problem}")]
    Invalid {
        /// Kind of the refused object.
        kind: Kind,
        /// Name of the refused object.
        name: String,
        /// What is wrong (boxed: it is large, and errors travel through many `Result`s).
        problem: Box<Problem>,
    },

    /// A document could not be read as an object of its kind.
    #[error("{kind} {name:?} cannot be read: {reason}")]
    Malformed {
        /// Kind of the document.
        kind: Kind,
        /// Name of the document, if it got that far.
        name: String,
        /// The decoder's message.
        reason: String,
    },

    /// A request to the engine is malformed (no container id, an interface asked for twice).
    #[error("invalid request: {field}: {reason}")]
    BadRequest {
        /// The request field (`containerID`, `nics`).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// An `ipam.spidernet.io/*` annotation is malformed.
    #[error("annotation {key}: {reason}")]
    Annotation {
        /// The annotation key.
        key: String,
        /// What is wrong with its value.
        reason: String,
    },

    /// An object refers to another that does not exist.
    #[error("{referrer} refers to {kind} {name:?}, which does not exist")]
    UnknownReference {
        /// Kind of the missing object.
        kind: Kind,
        /// Name of the missing object.
        name: String,
        /// Who refers to it (an annotation, a CNI config key, a workload).
        referrer: String,
    },

    /// No pool is left for a NIC after selection and filtering.
    #[error("no IP pool available for {nic} ({family}): {reason}")]
    NoPool {
        /// The interface being allocated.
        nic: String,
        /// The family.
        family: IpFamily,
        /// Which rule applied and why every candidate was filtered out.
        reason: String,
    },

    /// Every candidate pool of a NIC is full.
    #[error(
        "IP pools {pools:?} of {nic} ({family}) are exhausted; add IPs to a pool, or scale the \
         application down"
    )]
    PoolsExhausted {
        /// The interface being allocated.
        nic: String,
        /// The family.
        family: IpFamily,
        /// The candidate pools, in the order tried.
        pools: Vec<String>,
    },

    /// A subnet cannot give a pool the IPs it needs.
    #[error(
        "SpiderSubnet {subnet:?} has {free} free IPs but {pool} needs {needed} more; add IPs to \
         the subnet or lower the replica count"
    )]
    SubnetExhausted {
        /// The subnet.
        subnet: String,
        /// The pool that wanted to grow.
        pool: String,
        /// IPs the subnet can still hand out.
        free: u128,
        /// IPs the pool needs beyond what it has.
        needed: u128,
    },

    /// A terminating subnet or pool was asked for more: it takes no new claims or allocations
    /// (Spiderpool's "terminating IPPool" rule), while releases go on until nothing is left.
    #[error(
        "{key} is terminating and takes no {refused}; it goes once nothing holds its IPs, and \
         can be re-created then"
    )]
    Terminating {
        /// The terminating subnet or pool.
        key: ObjectKey,
        /// What it was asked for (`new claims: SpiderIPPool "p" needs 3 more IPs`).
        refused: String,
    },

    /// An application's auto pools cannot be reconciled as asked.
    #[error("{workload}: {reason}")]
    Workload {
        /// The application, `Deployment "ns/name"`.
        workload: String,
        /// What is wrong.
        reason: String,
    },

    /// The object does not exist.
    #[error("{0} not found")]
    NotFound(ObjectKey),

    /// An object with this key exists already.
    #[error("{0} already exists")]
    AlreadyExists(ObjectKey),

    /// The write was based on a stale version of the object.
    #[error("{0} was changed by someone else (stale version)")]
    Conflict(ObjectKey),

    /// Optimistic retries gave up.
    #[error("{key}: gave up after {attempts} conflicting writes; try again")]
    RetriesExhausted {
        /// The contended object.
        key: ObjectKey,
        /// How many attempts were made.
        attempts: u32,
    },

    /// The storage backend failed.
    #[error("store: {context}")]
    Backend {
        /// What the store was doing.
        context: String,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// A backend failure with context.
    pub fn backend(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Backend {
            context: context.into(),
            source: source.into(),
        }
    }

    /// Whether the error means "the object was missing".
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound(_))
    }

    /// A backend failure because the store could not be reached or did not answer in time:
    /// an [`Error::Backend`] whose source is [`Unavailable`], so that
    /// [`Error::is_unavailable`] tells it from a broken store. The write may or may not have
    /// happened (see the `store` module): callers re-read before retrying.
    pub fn unavailable(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Backend {
            context: context.into(),
            source: Box::new(Unavailable(source.into())),
        }
    }

    /// Whether the store could not be reached or did not answer in time (see
    /// [`Error::unavailable`]): the same request may succeed later, so the CNI answer to it is
    /// code 11, "try again later", not a store failure.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Backend { source, .. } if source.is::<Unavailable>())
    }

    /// Whether a retry with fresh data may succeed.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            Error::Conflict(_) | Error::AlreadyExists(_) | Error::RetriesExhausted { .. }
        )
    }

    pub(crate) fn invalid(kind: Kind, name: &str, problem: Problem) -> Self {
        Error::Invalid {
            kind,
            name: name.to_string(),
            problem: Box::new(problem),
        }
    }

    /// The validation problem, when the error is a refusal by validation.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Error::Invalid { problem, .. } => Some(problem),
            _ => None,
        }
    }
}

/// The source of an [`Error::Backend`] that a later retry may clear: the store could not be
/// reached (connection refused or reset, a server that says it is overloaded or unavailable) or
/// did not answer within its deadline. Made by [`Error::unavailable`], recognised by
/// [`Error::is_unavailable`].
#[derive(Debug, thiserror::Error)]
#[error("the store is unavailable")]
pub struct Unavailable(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// Why validation refused an object. Each names the offending values.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Problem {
    /// The object has no name.
    #[error("metadata.name is empty")]
    MissingName,
    /// A name that is not a DNS subdomain.
    #[error("metadata.name {0:?} must be lower-case letters, digits, '-' and '.', at most 253")]
    BadName(String),
    /// `ipVersion` is not 4 or 6.
    #[error("spec.ipVersion {0} is not 4 or 6")]
    UnknownIpVersion(i64),
    /// `ipVersion` disagrees with the addresses.
    #[error("spec.ipVersion {version} does not match {what} {value}")]
    IpVersionMismatch {
        /// The declared version.
        version: i64,
        /// Which field disagrees.
        what: &'static str,
        /// Its value.
        value: String,
    },
    /// Entries of a list lie outside the subnet.
    #[error("spec.{field} {ips} lie outside the subnet {subnet}")]
    OutsideSubnet {
        /// `ips` or `excludeIPs`.
        field: &'static str,
        /// The addresses outside.
        ips: IpSet,
        /// The subnet.
        subnet: IpNet,
    },
    /// The gateway is not in the subnet.
    #[error("spec.gateway {gateway} is outside the subnet {subnet}")]
    GatewayOutsideSubnet {
        /// The gateway.
        gateway: IpAddr,
        /// The subnet.
        subnet: IpNet,
    },
    /// The gateway could be handed to a pod.
    #[error(
        "spec.gateway {0} is inside spec.ips; add it to spec.excludeIPs or remove it from spec.ips"
    )]
    GatewayAllocatable(IpAddr),
    /// A route problem.
    #[error("spec.routes: {0}")]
    Route(String),
    /// Two subnets overlap.
    #[error("subnet {cidr} overlaps SpiderSubnet {other:?} ({other_cidr})")]
    OverlappingSubnet {
        /// This object's CIDR.
        cidr: IpNet,
        /// The other subnet.
        other: String,
        /// Its CIDR.
        other_cidr: IpNet,
    },
    /// A pool's CIDR overlaps another pool's different CIDR.
    #[error("subnet {cidr} overlaps the subnet {other_cidr} of SpiderIPPool {other:?}")]
    OverlappingPoolCidr {
        /// This pool's CIDR.
        cidr: IpNet,
        /// The other pool.
        other: String,
        /// Its CIDR.
        other_cidr: IpNet,
    },
    /// Two pools of one CIDR share IPs.
    #[error("IPs {ips} overlap with SpiderIPPool {other:?}")]
    OverlappingPoolIps {
        /// The other pool.
        other: String,
        /// The shared addresses.
        ips: IpSet,
    },
    /// A pool in a subnet's CIDR uses addresses the subnet does not have.
    #[error("IPs {ips} are not in spec.ips of SpiderSubnet {subnet:?}")]
    NotInSubnet {
        /// The subnet.
        subnet: String,
        /// The addresses missing from it.
        ips: IpSet,
    },
    /// A pool in a subnet's CIDR uses addresses the subnet gave to other pools.
    #[error("IPs {ips} of SpiderSubnet {subnet:?} belong to SpiderIPPool {other:?}")]
    HeldByPool {
        /// The subnet.
        subnet: String,
        /// The pool holding them.
        other: String,
        /// The addresses.
        ips: IpSet,
    },
    /// A field that cannot change changed.
    #[error("spec.{field} is immutable ({old} -> {new}); delete and re-create the object instead")]
    Immutable {
        /// The field.
        field: &'static str,
        /// Old value.
        old: String,
        /// New value.
        new: String,
    },
    /// An update would remove addresses pods hold.
    #[error("cannot remove IPs {ips} that are in use by {pods:?}; release them first")]
    InUse {
        /// The addresses.
        ips: IpSet,
        /// Their owners (`ns/pod`).
        pods: Vec<String>,
    },
    /// An update would remove addresses a subnet handed to pools.
    #[error(
        "cannot remove IPs {ips} that SpiderIPPools {pools:?} hold; shrink or delete the pools first"
    )]
    HeldByPools {
        /// The addresses.
        ips: IpSet,
        /// The pools.
        pools: Vec<String>,
    },
    /// Auto pool IPs are managed by Berth.
    #[error(
        "spec.ips of an auto-created pool are managed by its SpiderSubnet ({expected}); edit the application's replicas or ippool-ip-number instead"
    )]
    AutoPoolIps {
        /// The IPs the subnet records for the pool.
        expected: IpSet,
    },
    /// An auto-created pool whose `podAffinity` is not its application's.
    #[error(
        "spec.podAffinity of an auto-created pool must select its application's pods, \
         exactly {expected}; found {found}"
    )]
    AutoPoolAffinity {
        /// The selector of the application's pods.
        expected: String,
        /// The selector the pool has (`none` when absent).
        found: String,
    },
    /// An ownerReference names a SpiderSubnet that does not exist.
    #[error(
        "metadata.ownerReferences names SpiderSubnet {subnet:?}, which does not exist; \
         create the subnet first or drop the reference"
    )]
    UnknownOwnerSubnet {
        /// The subnet named.
        subnet: String,
    },
    /// The object is being deleted.
    #[error("it is terminating; wait for it to go or re-create it afterwards")]
    Terminating,
    /// A malformed label selector.
    #[error("spec.{field}: {reason}")]
    Selector {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A list that must not be empty is empty.
    #[error("spec.{0} must not be empty")]
    Empty(&'static str),
    /// A negative or unreasonable replica count or similar.
    #[error("spec.{field}: {reason}")]
    Field {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unavailable_store_is_told_from_a_broken_one() {
        let down = Error::unavailable("read SpiderIPPool \"p\"", "connection refused");
        assert!(down.is_unavailable());
        assert!(
            matches!(down, Error::Backend { .. }),
            "callers that match Backend still do"
        );
        assert_eq!(down.to_string(), "store: read SpiderIPPool \"p\"");
        let broken = Error::backend("read SpiderIPPool \"p\"", "checksum mismatch");
        assert!(!broken.is_unavailable());
        let key = ObjectKey::cluster(Kind::SpiderIPPool, "p");
        assert!(!Error::Conflict(key).is_unavailable());
    }
}
