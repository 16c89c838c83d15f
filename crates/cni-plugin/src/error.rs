//! The one error type of `cni-plugin`, and the CNI error each failure becomes.
//!
//! Inside the crate a failure keeps its type: the engine's [`ipam_core::Error`] as it was
//! returned, the agent's transport error as its source. At the CNI boundary
//! ([`berth_cni::Error::from`]) it becomes the protocol's error with Berth's code ([`code`]);
//! Berth's own failures travel as [`berth_cni::Error::Plugin`] with this error as their typed
//! source.

use berth_cni::error::BoxError;

pub mod code {
    //! Berth's CNI error codes (the plugin's own range, 100 and up); the spec's are
    //! [`berth_cni::error::code`].
    //!
    //! | code | name | meaning |
    //! |---:|---|---|
    //! | 100 | [`POOL_EXHAUSTED`] | a pool chosen for a NIC has no free IP |
    //! | 101 | [`NO_POOL`] | no pool could be selected for a NIC / IP family |
    //! | 102 | [`STORE`] | the store (sled, Kubernetes API) failed |
    //! | 103 | [`AGENT`] | the node agent is unreachable or answered garbage |
    //! | 104 | [`UNKNOWN_OWNER`] | `BERTH_OWNER` names a workload that is not registered |
    //! | 105 | [`NOT_HELD`] | CHECK: the attachment does not hold the IPs `prevResult` lists |
    //! | 106 | [`INVALID_POD_CONFIG`] | the pod's IPAM annotations (its workload's pod template) are invalid |
    //! | 107 | [`IP_CONFLICT`] | ADD, conflict detection: another host answered for the NIC's address |
    //! | 108 | [`GATEWAY_UNREACHABLE`] | ADD, gateway detection: the address's gateway did not answer |
    //! | 109 | [`UNKNOWN_POD`] | Kubernetes mode: the pod does not exist, was replaced, or is another node's |

    /// A pool has no free IP for this NIC.
    pub const POOL_EXHAUSTED: u32 = 100;
    /// No pool could be selected for this NIC / family.
    pub const NO_POOL: u32 = 101;
    /// The store failed.
    pub const STORE: u32 = 102;
    /// The node agent failed or could not be reached.
    pub const AGENT: u32 = 103;
    /// `BERTH_OWNER` names an unregistered workload.
    pub const UNKNOWN_OWNER: u32 = 104;
    /// CHECK found that the attachment does not hold what `prevResult` says.
    pub const NOT_HELD: u32 = 105;
    /// The pod's `ipam.spidernet.io/*` annotations or its workload are invalid.
    pub const INVALID_POD_CONFIG: u32 = 106;
    /// Another host on the segment answered an ARP probe or a neighbour solicitation for
    /// the NIC's address.
    pub const IP_CONFLICT: u32 = 107;
    /// The gateway of the NIC's address answered no ARP request or neighbour solicitation.
    pub const GATEWAY_UNREACHABLE: u32 = 108;
    /// Kubernetes mode: the pod does not exist, is another incarnation, or is another node's.
    pub const UNKNOWN_POD: u32 = 109;
}

/// Everything that can fail in `berth-ipam`, the agent and the data-dir code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A failure of the CNI protocol layer (input, I/O, a spec code), or a CNI error another
    /// process returned (the agent's), passed on with its code.
    #[error(transparent)]
    Cni(#[from] berth_cni::Error),

    /// The engine or the store refused or failed; the code follows from why (see
    /// [`Error::code`]).
    #[error(transparent)]
    Ipam(#[from] ipam_core::Error),

    /// The store could not be opened or used outside the engine (code 102).
    #[error("{msg}")]
    Store {
        /// What was being done.
        msg: String,
        /// The backend's error.
        #[source]
        source: Option<BoxError>,
    },

    /// The node agent failed or could not be reached (code 103).
    #[error("{msg}")]
    Agent {
        /// What was being done.
        msg: String,
        /// The transport or protocol error.
        #[source]
        source: Option<BoxError>,
    },

    /// `BERTH_OWNER` names a workload the store does not know (code 104).
    #[error("{0}")]
    UnknownOwner(String),

    /// Kubernetes mode: the agent cannot allocate for this pod (code 109): it does not exist,
    /// it is another incarnation than the runtime's, or it is bound to another node.
    #[error("{0}")]
    UnknownPod(String),

    /// CHECK: the attachment does not hold what `prevResult` says (code 105).
    #[error("{0}")]
    NotHeld(String),

    /// A check of the pod's NIC before ADD answered failed: a conflict (code 107), an
    /// unreachable gateway (108), or the probe could not run (5). `aftermath` says what
    /// became of the NIC's IPs.
    #[error("{probe}; {aftermath}")]
    Probe {
        /// What the probe found.
        probe: crate::ipam::probe::Error,
        /// What was done with the IPs (released, or kept for a StatefulSet pod).
        aftermath: String,
    },

    /// `BERTH_OWNER` is not `<Deployment|StatefulSet>/<name>` (code 7).
    #[error("invalid BERTH_OWNER {value:?}: {reason}")]
    InvalidOwner {
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl Error {
    /// The CNI code this error is answered with. The engine's errors map as:
    ///
    /// | `ipam_core::Error` | code |
    /// |---|---|
    /// | `PoolsExhausted`, `SubnetExhausted` | 100 |
    /// | `NoPool`, `UnknownReference` (a named pool or subnet that does not exist), `Terminating` (its subnet is being deleted) | 101 |
    /// | `Annotation`, `Invalid`, `InvalidRange`, `Workload` | 106 |
    /// | `BadRequest` (a request without container id, an interface twice) | 7 |
    /// | `Conflict`, `AlreadyExists`, `RetriesExhausted` | 11 (try again later) |
    /// | `Backend` when the store could not be reached in time (`is_unavailable`: an API server down or slow) | 11 |
    /// | `NotFound`, `Malformed`, other `Backend` | 102 |
    pub fn code(&self) -> u32 {
        use berth_cni::error::code as spec;
        use ipam_core::Error as E;
        match self {
            Error::Cni(e) => e.code(),
            Error::Ipam(e) => match e {
                E::PoolsExhausted { .. } | E::SubnetExhausted { .. } => code::POOL_EXHAUSTED,
                E::NoPool { .. } | E::UnknownReference { .. } | E::Terminating { .. } => {
                    code::NO_POOL
                }
                E::Annotation { .. }
                | E::Invalid { .. }
                | E::InvalidRange { .. }
                | E::Workload { .. } => code::INVALID_POD_CONFIG,
                E::BadRequest { .. } => spec::INVALID_CONFIG,
                E::Conflict(_) | E::AlreadyExists(_) | E::RetriesExhausted { .. } => {
                    spec::TRY_AGAIN_LATER
                }
                E::Backend { .. } if e.is_unavailable() => spec::TRY_AGAIN_LATER,
                E::NotFound(_) | E::Malformed { .. } | E::Backend { .. } => code::STORE,
            },
            Error::Store { .. } => code::STORE,
            Error::Agent { .. } => code::AGENT,
            Error::UnknownOwner(_) => code::UNKNOWN_OWNER,
            Error::UnknownPod(_) => code::UNKNOWN_POD,
            Error::NotHeld(_) => code::NOT_HELD,
            Error::Probe { probe, .. } => match probe {
                crate::ipam::probe::Error::Conflict { .. } => code::IP_CONFLICT,
                crate::ipam::probe::Error::GatewayUnreachable { .. } => code::GATEWAY_UNREACHABLE,
                crate::ipam::probe::Error::Setup { .. } => spec::IO,
            },
            Error::InvalidOwner { .. } => spec::INVALID_CONFIG,
        }
    }

    /// The CNI wire form of this error.
    pub fn to_cni_error(self) -> berth_cni::CniError {
        berth_cni::Error::from(self).to_cni_error()
    }

    /// A network config the plugin refuses (code 7).
    pub fn invalid_config(msg: impl Into<String>) -> Self {
        Error::Cni(berth_cni::Error::InvalidConfig(msg.into()))
    }

    /// A bug (code 999).
    pub fn internal(msg: impl Into<String>, source: Option<BoxError>) -> Self {
        Error::Cni(berth_cni::Error::Internal {
            msg: msg.into(),
            source,
        })
    }

    /// An I/O failure (code 5).
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Cni(berth_cni::Error::Io {
            context: context.into(),
            source,
        })
    }

    /// STATUS: ADD cannot be served now (code 50).
    pub fn not_available(msg: impl Into<String>) -> Self {
        Error::Cni(berth_cni::Error::NotAvailable(msg.into()))
    }
}

impl From<Error> for berth_cni::Error {
    /// Protocol errors pass as they are; a transient refusal of the engine is code 11 with the
    /// engine's error as its cause; a malformed `BERTH_OWNER` is an invalid config (7); the
    /// rest is [`berth_cni::Error::Plugin`] with Berth's code and this error as its source.
    fn from(err: Error) -> Self {
        let code = err.code();
        match err {
            Error::Cni(e) => e,
            Error::Ipam(e) if code == berth_cni::error::code::TRY_AGAIN_LATER => {
                berth_cni::Error::try_again_later(e.to_string(), e)
            }
            Error::InvalidOwner { .. } | Error::Ipam(ipam_core::Error::BadRequest { .. }) => {
                berth_cni::Error::InvalidConfig(err.to_string())
            }
            other => berth_cni::Error::plugin(code, other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipam_core::{Kind, ObjectKey};

    #[test]
    fn the_engines_refusals_keep_their_type_behind_berths_codes() {
        let exhausted = Error::Ipam(ipam_core::Error::PoolsExhausted {
            nic: "eth0".into(),
            family: ipam_core::IpFamily::V4,
            pools: vec!["auto4-web-eth0-1a2b3".into()],
        });
        assert_eq!(exhausted.code(), 100);
        let cni = berth_cni::Error::from(exhausted);
        let berth_cni::Error::Plugin { source, .. } = &cni else {
            panic!("{cni:?}")
        };
        let inner = source
            .downcast_ref::<Error>()
            .expect("the plugin's own error");
        assert!(matches!(
            inner,
            Error::Ipam(ipam_core::Error::PoolsExhausted { .. })
        ));
        assert!(cni.to_string().contains("auto4-web-eth0-1a2b3"));

        let conflict = Error::Ipam(ipam_core::Error::Conflict(ObjectKey::cluster(
            Kind::SpiderIPPool,
            "p",
        )));
        let cni = conflict.to_cni_error();
        assert_eq!(cni.code, 11);
    }

    #[test]
    fn agent_errors_carry_their_cause_in_details() {
        let err = Error::Agent {
            msg: "calling agent at /run/berth/agent.sock".into(),
            source: Some(Box::new(std::io::Error::other("connection refused"))),
        };
        let cni = err.to_cni_error();
        assert_eq!(
            (cni.code, cni.msg.as_str(), cni.details.as_str()),
            (
                103,
                "calling agent at /run/berth/agent.sock",
                "connection refused"
            )
        );
    }

    #[test]
    fn codes_of_berths_variants() {
        assert_eq!(Error::UnknownOwner("o".into()).code(), 104);
        assert_eq!(Error::NotHeld("n".into()).code(), 105);
        let store = Error::Store {
            msg: "s".into(),
            source: None,
        };
        assert_eq!(store.code(), 102);
        let owner = Error::InvalidOwner {
            value: "Pod/x".into(),
            reason: "r".into(),
        };
        assert_eq!(owner.to_cni_error().code, 7);
        assert_eq!(Error::not_available("x").code(), 50);
        // A store that cannot be reached in time is "try again later"; a broken one is not.
        let down = ipam_core::Error::unavailable("list pools", "connection refused");
        assert_eq!(Error::Ipam(down).code(), 11);
        let broken = ipam_core::Error::backend("list pools", std::io::Error::other("disk"));
        assert_eq!(Error::Ipam(broken).code(), 102);
    }

    #[test]
    fn probe_failures_are_107_and_108_with_ip_and_mac_in_the_message() {
        use crate::ipam::probe;
        let conflict = Error::Probe {
            probe: probe::Error::Conflict {
                nic: "eth0".into(),
                ip: "10.6.168.171".parse().unwrap(),
                mac: netns_routing::link::Mac([2, 0, 0, 0, 0, 0x99]),
            },
            aftermath: "released 10.6.168.171".into(),
        };
        let cni = conflict.to_cni_error();
        assert_eq!(cni.code, 107);
        assert!(
            cni.msg.contains("10.6.168.171") && cni.msg.contains("02:00:00:00:00:99"),
            "{}",
            cni.msg
        );
        let gateway = Error::Probe {
            probe: probe::Error::GatewayUnreachable {
                nic: "eth0".into(),
                gateway: "10.6.0.1".parse().unwrap(),
                from: "10.6.168.171".parse().unwrap(),
                tries: 3,
                timeout: std::time::Duration::from_millis(100),
            },
            aftermath: String::new(),
        };
        assert_eq!(gateway.code(), 108);
    }
}
