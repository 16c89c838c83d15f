//! `CNI_COMMAND`: the six operations and the rules that depend on them.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;
use crate::version::Version;

/// A CNI operation, as named by `CNI_COMMAND` (exact, upper case, like the Go skeleton).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// Attach: allocate / configure, print a result.
    Add,
    /// Detach: undo ADD, best effort, repeatable.
    Del,
    /// Verify an attachment against `prevResult` (config 0.4.0 or later).
    Check,
    /// Print the supported versions; stdin is ignored.
    Version,
    /// Release everything not in `cni.dev/valid-attachments` (config 1.1.0 or later).
    Gc,
    /// Report readiness to serve ADD (config 1.1.0 or later).
    Status,
}

impl Command {
    /// The name as written in `CNI_COMMAND`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Gc => "GC",
            Command::Status => "STATUS",
        }
    }

    /// The oldest config `cniVersion` that allows this command: CHECK 0.4.0, GC and
    /// STATUS 1.1.0, the rest any supported version.
    pub const fn min_version(self) -> Option<Version> {
        match self {
            Command::Check => Some(Version::V0_4_0),
            Command::Gc | Command::Status => Some(Version::V1_1_0),
            Command::Add | Command::Del | Command::Version => None,
        }
    }

    /// Fails with [`Error::VersionForbidsCommand`] (code 1) when a config of `version` may not
    /// run this command.
    pub fn check_version(self, version: Version) -> Result<(), Error> {
        match self.min_version() {
            Some(minimum) if version < minimum => Err(Error::VersionForbidsCommand {
                command: self,
                version,
                minimum,
            }),
            _ => Ok(()),
        }
    }

    /// Whether the command is about one attachment (CNI_CONTAINERID + CNI_IFNAME).
    pub const fn is_attachment(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Command {
    type Err = Error;

    /// `"ADD"` … `"STATUS"`; anything else is [`Error::UnknownCommand`] (code 4).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            other => return Err(Error::UnknownCommand(other.to_owned())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::SUPPORTED;

    #[test]
    fn names_round_trip_and_are_case_sensitive() {
        for c in [
            Command::Add,
            Command::Del,
            Command::Check,
            Command::Version,
            Command::Gc,
            Command::Status,
        ] {
            assert_eq!(c.as_str().parse::<Command>().unwrap(), c);
        }
        let err = "add".parse::<Command>().unwrap_err();
        assert_eq!(err.code(), 4);
        assert_eq!(err.to_string(), "unknown CNI_COMMAND: add");
    }

    #[test]
    fn version_gates() {
        use Version::*;
        let allowed = |c: Command| -> Vec<Version> {
            SUPPORTED
                .into_iter()
                .filter(|v| c.check_version(*v).is_ok())
                .collect()
        };
        assert_eq!(allowed(Command::Add), SUPPORTED.to_vec());
        assert_eq!(allowed(Command::Del), SUPPORTED.to_vec());
        assert_eq!(allowed(Command::Check), vec![V0_4_0, V1_0_0, V1_1_0]);
        assert_eq!(allowed(Command::Gc), vec![V1_1_0]);
        assert_eq!(allowed(Command::Status), vec![V1_1_0]);

        let err = Command::Check.check_version(V0_3_1).unwrap_err();
        assert_eq!(err.code(), 1);
        assert_eq!(err.to_string(), "config version does not allow CHECK");
    }
}
