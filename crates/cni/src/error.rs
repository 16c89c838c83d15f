//! The crate's error type and the CNI error result it turns into.
//!
//! Every failure is an [`Error`]; [`CniError`] is its wire form, `{"cniVersion", "code",
//! "msg", "details"}` printed on stdout with exit status 1. [`code`] lists the spec's numbers.
//! A plugin's own failures (codes 100 and up) travel as [`Error::Plugin`], with the plugin's
//! error as a typed `#[source]` that the caller can downcast.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::command::Command;
use crate::version::Version;

/// A boxed error from a lower layer or from the plugin, kept as a `#[source]`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

pub mod code {
    //! CNI error codes. 0–99 are the spec's (`SPEC.md` "Error"); 100 and up are the plugin's
    //! own ([`Error::Plugin`](super::Error::Plugin)).
    //!
    //! | code | name | meaning |
    //! |---:|---|---|
    //! | 1 | [`INCOMPATIBLE_VERSION`] | config `cniVersion` unsupported, or too old for the command |
    //! | 2 | [`UNSUPPORTED_FIELD`] | a field we do not accept (unknown `CNI_ARGS` key without `IgnoreUnknown`) |
    //! | 3 | [`UNKNOWN_CONTAINER`] | the container does not exist (the runtime need not DEL) |
    //! | 4 | [`INVALID_ENV`] | a `CNI_*` variable missing, malformed or unknown |
    //! | 5 | [`IO`] | reading stdin / writing stdout / other I/O |
    //! | 6 | [`DECODE`] | stdin or a part of it does not decode (bad JSON, wrong types) |
    //! | 7 | [`INVALID_CONFIG`] | the network config decodes but is invalid (no `name`, bad `BERTH_OWNER`) |
    //! | 11 | [`TRY_AGAIN_LATER`] | transient: the store is locked, a write conflicted too often |
    //! | 50 | [`NOT_AVAILABLE`] | STATUS: cannot serve ADD now |
    //! | 51 | [`LIMITED_CONNECTIVITY`] | STATUS: cannot serve ADD and existing pods may be affected |
    //! | 100+ | [`PLUGIN_FIRST`] and up | the plugin's own |
    //! | 999 | [`INTERNAL`] | a bug; the Go library uses the same number |

    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field; the message names key and value.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables; the message names them.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO: u32 = 5;
    /// Failed to decode content.
    pub const DECODE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin cannot service ADD requests.
    pub const NOT_AVAILABLE: u32 = 50;
    /// STATUS: not available, and existing containers may have limited connectivity.
    pub const LIMITED_CONNECTIVITY: u32 = 51;
    /// The first code a plugin may use for its own errors.
    pub const PLUGIN_FIRST: u32 = 100;
    /// Internal error (same number as the Go CNI library's `ErrInternal`).
    pub const INTERNAL: u32 = 999;
}

/// Everything that can fail in a CNI invocation, from parsing to the plugin's own work.
///
/// `Display` is the one-line `msg` of the CNI error; the extra context (offending value,
/// supported versions, the `#[source]` chain) becomes `details` — see [`Error::details`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config's `cniVersion` is absent or not one we speak (code 1).
    #[error("incompatible CNI versions")]
    IncompatibleVersion {
        /// What the config asked for; `None` when it had no `cniVersion`.
        requested: Option<String>,
    },
    /// The config's version is too old for the command, e.g. CHECK at 0.3.1 (code 1).
    #[error("config version does not allow {command}")]
    VersionForbidsCommand {
        /// The command asked for.
        command: Command,
        /// The config's version.
        version: Version,
        /// The oldest version that allows the command.
        minimum: Version,
    },
    /// A field or value we do not support (code 2).
    #[error("unsupported field {field:?} with value {value:?}")]
    UnsupportedField {
        /// Key of the field.
        field: String,
        /// Its value.
        value: String,
    },
    /// `CNI_ARGS` keys we do not know while `IgnoreUnknown` is not set (code 2).
    #[error("unknown CNI_ARGS [{}] (set IgnoreUnknown=1 to allow them)", .pairs.join(";"))]
    UnknownArgs {
        /// The offending `K=V` pairs, in input order.
        pairs: Vec<String>,
    },
    /// The container does not exist (code 3).
    #[error("unknown container {container_id:?}")]
    UnknownContainer {
        /// `CNI_CONTAINERID`.
        container_id: String,
    },
    /// Required variables are missing or empty; all of them are named (code 4).
    #[error("required env variables [{}] missing", .0.join(","))]
    MissingEnv(Vec<&'static str>),
    /// `CNI_COMMAND` names no command we know (code 4).
    #[error("unknown CNI_COMMAND: {0}")]
    UnknownCommand(String),
    /// A variable is present but malformed (code 4); `details` carries the value.
    #[error("invalid {var}: {reason}")]
    InvalidEnv {
        /// The variable, e.g. `CNI_IFNAME`.
        var: &'static str,
        /// Its value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An I/O operation failed (code 5).
    #[error("{context}")]
    Io {
        /// What was being done, e.g. `reading stdin`.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// JSON did not decode (code 6).
    #[error("error decoding {what}")]
    Decode {
        /// What was being decoded, e.g. `network config` or `prevResult`.
        what: String,
        /// The serde error (line / column, expected type).
        #[source]
        source: serde_json::Error,
    },
    /// The config has no `name` (code 7; the Go skeleton's exact message).
    #[error("missing network name")]
    MissingNetworkName,
    /// The config's `name` breaks the spec's character rule (code 7).
    #[error("invalid characters found in network name {0:?}")]
    InvalidNetworkName(String),
    /// The config decodes but a plugin found it invalid (code 7).
    #[error("invalid network config: {0}")]
    InvalidConfig(String),
    /// A transient failure; the runtime should retry (code 11).
    #[error("try again later: {msg}")]
    TryAgainLater {
        /// What could not be done now.
        msg: String,
        /// Why, when a lower layer said.
        #[source]
        source: Option<BoxError>,
    },
    /// STATUS: cannot service ADD (code 50).
    #[error("plugin not available: {0}")]
    NotAvailable(String),
    /// STATUS: cannot service ADD, existing containers may be affected (code 51).
    #[error("plugin not available, limited connectivity: {0}")]
    LimitedConnectivity(String),
    /// The plugin's own failure, with its code (100 and up). The message is the source's; the
    /// source is the plugin's typed error, which callers can downcast.
    #[error("{source}")]
    Plugin {
        /// The CNI code, [`code::PLUGIN_FIRST`] or more.
        code: u32,
        /// The plugin's error.
        #[source]
        source: BoxError,
    },
    /// A bug (code 999).
    #[error("{msg}")]
    Internal {
        /// What went wrong.
        msg: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// A CNI error passed through unchanged, e.g. one the agent or a delegate returned.
    #[error("{0}")]
    Cni(CniError),
}

impl Error {
    /// The CNI error code (see [`code`]).
    pub fn code(&self) -> u32 {
        match self {
            Error::IncompatibleVersion { .. } | Error::VersionForbidsCommand { .. } => {
                code::INCOMPATIBLE_VERSION
            }
            Error::UnsupportedField { .. } | Error::UnknownArgs { .. } => code::UNSUPPORTED_FIELD,
            Error::UnknownContainer { .. } => code::UNKNOWN_CONTAINER,
            Error::MissingEnv(_) | Error::UnknownCommand(_) | Error::InvalidEnv { .. } => {
                code::INVALID_ENV
            }
            Error::Io { .. } => code::IO,
            Error::Decode { .. } => code::DECODE,
            Error::MissingNetworkName | Error::InvalidNetworkName(_) | Error::InvalidConfig(_) => {
                code::INVALID_CONFIG
            }
            Error::TryAgainLater { .. } => code::TRY_AGAIN_LATER,
            Error::NotAvailable(_) => code::NOT_AVAILABLE,
            Error::LimitedConnectivity(_) => code::LIMITED_CONNECTIVITY,
            Error::Plugin { code, .. } => *code,
            Error::Internal { .. } => code::INTERNAL,
            Error::Cni(e) => e.code,
        }
    }

    /// The `details` of the CNI error: the offending value or the list of supported
    /// versions where that helps, otherwise the `#[source]` chain joined by `": "`.
    pub fn details(&self) -> String {
        match self {
            Error::IncompatibleVersion { requested } => match requested {
                Some(v) => format!(
                    "config is {v:?}, plugin supports {}",
                    Version::supported_list()
                ),
                None => format!(
                    "config has no cniVersion, plugin supports {}",
                    Version::supported_list()
                ),
            },
            Error::VersionForbidsCommand {
                command,
                version,
                minimum,
            } => format!(
                "config is {:?}, {command} needs {:?} or later",
                version.as_str(),
                minimum.as_str()
            ),
            Error::InvalidEnv { value, .. } => format!("{value:?}"),
            Error::Cni(e) => e.details.clone(),
            // The message is the source's own text: the details are what lies below it.
            Error::Plugin { source, .. } => source_chain(source.as_ref()),
            _ => source_chain(self),
        }
    }

    /// The CNI wire form of this error.
    pub fn to_cni_error(&self) -> CniError {
        match self {
            Error::Cni(e) => e.clone(),
            other => CniError::new(other.code(), other.to_string(), other.details()),
        }
    }
}

/// The texts of an error's `#[source]` chain (not its own), joined by `": "`: what CNI error
/// `details` carry.
pub fn source_chain(err: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut next = err.source();
    while let Some(e) = next {
        parts.push(e.to_string());
        next = e.source();
    }
    parts.join(": ")
}

/// An error's text followed by its `#[source]` chain, joined by `": "`.
pub fn chain(err: &dyn std::error::Error) -> String {
    match source_chain(err) {
        sources if sources.is_empty() => err.to_string(),
        sources => format!("{err}: {sources}"),
    }
}

impl Error {
    /// A plugin's own failure with its `code` (100 and up; a smaller one is taken as 999, a
    /// bug) and its typed cause.
    pub fn plugin(code: u32, source: impl Into<BoxError>) -> Self {
        let code = if code >= code::PLUGIN_FIRST {
            code
        } else {
            code::INTERNAL
        };
        Error::Plugin {
            code,
            source: source.into(),
        }
    }

    /// A transient failure (code 11) with its cause.
    pub fn try_again_later(msg: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::TryAgainLater {
            msg: msg.into(),
            source: Some(source.into()),
        }
    }
}

impl From<&Error> for CniError {
    fn from(err: &Error) -> Self {
        err.to_cni_error()
    }
}

impl From<Error> for CniError {
    fn from(err: Error) -> Self {
        match err {
            Error::Cni(e) => e,
            other => other.to_cni_error(),
        }
    }
}

impl From<CniError> for Error {
    fn from(err: CniError) -> Self {
        Error::Cni(err)
    }
}

/// A CNI error result: what goes to stdout (with exit status 1) when an invocation fails.
///
/// Decoding ignores `cniVersion`, so an error printed by another plugin (or sent by the
/// agent) can be read back with `serde_json::from_slice::<CniError>` and passed on as
/// [`Error::Cni`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniError {
    /// The error code (see [`code`]).
    pub code: u32,
    /// A short message.
    pub msg: String,
    /// A longer explanation; omitted from the JSON when empty (as the Go library does).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    /// An error with the given code, message and details.
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The JSON printed on stdout: `{"cniVersion", "code", "msg", "details"?}`.
    pub fn to_json(&self, version: Version) -> Vec<u8> {
        #[derive(Serialize)]
        struct Wire<'a> {
            #[serde(rename = "cniVersion")]
            cni_version: Version,
            code: u32,
            msg: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            details: &'a str,
        }
        let wire = Wire {
            cni_version: version,
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        };
        serde_json::to_vec(&wire).expect("an error result always serializes")
    }
}

impl fmt::Display for CniError {
    /// `msg` or `msg; details`, like the Go library.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.details.is_empty() {
            f.write_str(&self.msg)
        } else {
            write!(f, "{}; {}", self.msg, self.details)
        }
    }
}

impl std::error::Error for CniError {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn rendered(err: &Error, version: Version) -> Value {
        serde_json::from_slice(&err.to_cni_error().to_json(version)).unwrap()
    }

    #[test]
    fn error_json_shape() {
        let err = Error::InvalidEnv {
            var: "CNI_IFNAME",
            value: "eth0;rm".into(),
            reason: "interface name may only contain A-Z a-z 0-9 _ . - @".into(),
        };
        assert_eq!(
            rendered(&err, Version::V0_3_1),
            json!({
                "cniVersion": "0.3.1",
                "code": 4,
                "msg": "invalid CNI_IFNAME: interface name may only contain A-Z a-z 0-9 _ . - @",
                "details": "\"eth0;rm\""
            })
        );
    }

    #[test]
    fn empty_details_are_omitted() {
        let v = rendered(&Error::MissingNetworkName, Version::V1_0_0);
        assert_eq!(
            v,
            json!({"cniVersion": "1.0.0", "code": 7, "msg": "missing network name"})
        );
    }

    #[test]
    fn missing_env_names_every_variable() {
        let err = Error::MissingEnv(vec!["CNI_CONTAINERID", "CNI_IFNAME"]);
        assert_eq!(err.code(), 4);
        assert_eq!(
            err.to_string(),
            "required env variables [CNI_CONTAINERID,CNI_IFNAME] missing"
        );
    }

    #[test]
    fn incompatible_version_lists_supported() {
        let err = Error::IncompatibleVersion {
            requested: Some("9.9.9".into()),
        };
        let cni = err.to_cni_error();
        assert_eq!(cni.code, 1);
        assert_eq!(cni.msg, "incompatible CNI versions");
        assert_eq!(
            cni.details,
            r#"config is "9.9.9", plugin supports ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]"#
        );
    }

    /// A plugin error with a cause below it, as a plugin crate would define one.
    #[derive(Debug, thiserror::Error)]
    #[error("calling agent at /run/berth/agent.sock")]
    struct AgentDown(#[source] std::io::Error);

    #[test]
    fn a_plugin_error_keeps_its_code_its_type_and_its_chain() {
        let err = Error::plugin(103, AgentDown(std::io::Error::other("connection refused")));
        let cni = CniError::from(&err);
        assert_eq!(cni.code, 103);
        assert_eq!(cni.msg, "calling agent at /run/berth/agent.sock");
        assert_eq!(cni.details, "connection refused");
        let Error::Plugin { source, .. } = &err else {
            panic!("{err:?}")
        };
        assert!(source.downcast_ref::<AgentDown>().is_some());
        // Codes below 100 are the spec's: a plugin claiming one is a bug.
        assert_eq!(
            Error::plugin(7, AgentDown(std::io::Error::other("x"))).code(),
            999
        );
    }

    #[test]
    fn codes_of_our_variants() {
        let later = Error::try_again_later("locked", std::io::Error::other("busy"));
        assert_eq!(later.code(), 11);
        assert_eq!(later.details(), "busy");
        assert_eq!(Error::NotAvailable("x".into()).code(), 50);
        assert_eq!(Error::LimitedConnectivity("x".into()).code(), 51);
        let internal = Error::Internal {
            msg: "bug".into(),
            source: None,
        };
        assert_eq!(internal.code(), 999);
    }

    #[test]
    fn passthrough_keeps_foreign_errors_verbatim() {
        let foreign: CniError =
            serde_json::from_str(r#"{"cniVersion":"0.3.1","code":123,"msg":"m","details":"d"}"#)
                .unwrap();
        let err = Error::from(foreign.clone());
        assert_eq!(err.code(), 123);
        assert_eq!(CniError::from(err), foreign);
        assert_eq!(foreign.to_string(), "m; d");
    }
}
