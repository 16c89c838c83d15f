//! Which mode a `berth-ipam` invocation runs in (DESIGN §5).

use std::fmt;
use std::path::PathBuf;

use crate::agent::DEFAULT_SOCKET;
use crate::ipam::IpamConfig;

/// The data dir of embedded mode when the config names none.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/berth";

/// Where the plugin's state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// One request to the node agent on this socket.
    Agent {
        /// The agent's socket.
        socket: PathBuf,
        /// Why: the config's `ipam_unix_socket_path`, or the default socket exists.
        reason: &'static str,
    },
    /// The plugin opens the sled store in this data dir itself — unless an agent serves it
    /// (`<data_dir>/agent` names a live socket), then it goes through that agent.
    Embedded {
        /// The data dir.
        data_dir: PathBuf,
        /// Why: the config's `data_dir`, or the default.
        reason: &'static str,
    },
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::Agent { socket, reason } => {
                write!(f, "agent mode on {} ({reason})", socket.display())
            }
            Mode::Embedded { data_dir, reason } => {
                write!(f, "embedded mode in {} ({reason})", data_dir.display())
            }
        }
    }
}

/// The defaults mode resolution falls back to (fields so tests can point them elsewhere).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeDefaults {
    /// The agent socket looked for when the config names neither a socket nor a data dir
    /// ([`DEFAULT_SOCKET`]).
    pub agent_socket: PathBuf,
    /// The data dir of embedded mode when the config names none ([`DEFAULT_DATA_DIR`]).
    pub data_dir: PathBuf,
}

impl Default for ModeDefaults {
    fn default() -> Self {
        ModeDefaults {
            agent_socket: DEFAULT_SOCKET.into(),
            data_dir: DEFAULT_DATA_DIR.into(),
        }
    }
}

/// Chooses the mode, in this order:
///
/// 1. `ipam_unix_socket_path` set → agent mode on it;
/// 2. `data_dir` set → embedded mode in it;
/// 3. neither → agent mode if the default socket exists, else embedded mode in the default
///    data dir.
///
/// In embedded mode the data dir's agent record is honoured later, when the store is opened
/// ([`open_data_dir`](crate::open_data_dir)).
pub fn resolve_mode(ipam: &IpamConfig, defaults: &ModeDefaults) -> Mode {
    if let Some(socket) = ipam.ipam_unix_socket_path.clone() {
        return Mode::Agent {
            socket,
            reason: "ipam_unix_socket_path",
        };
    }
    if let Some(data_dir) = ipam.data_dir.clone() {
        return Mode::Embedded {
            data_dir,
            reason: "data_dir",
        };
    }
    if defaults.agent_socket.exists() {
        return Mode::Agent {
            socket: defaults.agent_socket.clone(),
            reason: "the default agent socket exists",
        };
    }
    Mode::Embedded {
        data_dir: defaults.data_dir.clone(),
        reason: "the default data dir; no agent socket at the default path",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn resolution_order() {
        let tmp = tempfile::tempdir().unwrap();
        let defaults = ModeDefaults {
            agent_socket: tmp.path().join("agent.sock"),
            data_dir: tmp.path().join("data"),
        };
        let both = IpamConfig {
            ipam_unix_socket_path: Some("/run/x.sock".into()),
            data_dir: Some("/d".into()),
            ..IpamConfig::default()
        };
        assert!(matches!(
            resolve_mode(&both, &defaults),
            Mode::Agent { socket, .. } if socket == Path::new("/run/x.sock")
        ));
        let dir_only = IpamConfig {
            data_dir: Some("/d".into()),
            ..IpamConfig::default()
        };
        assert!(matches!(
            resolve_mode(&dir_only, &defaults),
            Mode::Embedded { data_dir, .. } if data_dir == Path::new("/d")
        ));
        let neither = IpamConfig::default();
        assert_eq!(
            resolve_mode(&neither, &defaults),
            Mode::Embedded {
                data_dir: defaults.data_dir.clone(),
                reason: "the default data dir; no agent socket at the default path"
            }
        );
        std::fs::write(&defaults.agent_socket, b"").unwrap();
        assert!(matches!(
            resolve_mode(&neither, &defaults),
            Mode::Agent { socket, .. } if socket == defaults.agent_socket
        ));
        assert!(
            resolve_mode(&neither, &defaults)
                .to_string()
                .starts_with("agent mode on ")
        );
    }
}
