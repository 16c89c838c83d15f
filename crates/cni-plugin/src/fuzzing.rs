//! The fuzz target `cni_config` for `berth-ipam`: the protocol's checks
//! ([`berth_cni::fuzzing`], with `BERTH_OWNER` as the plugin's own `CNI_ARGS` key), plus
//! Berth's keys read from the same input — the `ipam` object as [`IpamConfig`] (what it
//! accepts writes back the same) and `BERTH_OWNER` as [`Owner`] (refused with code 7, or
//! shown and read back the same). `cni_result` is the protocol's alone. Shared by the fuzz
//! targets in `fuzz/` and the corpus replay test; not part of the API.

use berth_cni::env::CNI_ARGS;
use berth_cni::fuzzing::{check_error, split_input};
use berth_cni::{CniArgs, NetworkConfig};

use crate::ipam::IpamConfig;
use crate::owner::{BERTH_OWNER, Owner, owner_of};

/// Fuzz target `cni_config` (input format: [`berth_cni::fuzzing::check_cni_config`]).
pub fn check_cni_config(data: &[u8]) {
    berth_cni::fuzzing::check_cni_config_with(data, &[BERTH_OWNER]);
    let (env, stdin) = split_input(data);
    if let Ok(config) = NetworkConfig::parse(stdin) {
        match IpamConfig::of(&config) {
            Ok(ipam) => {
                let value = serde_json::to_value(&ipam).expect("an IPAM config serializes");
                let back: IpamConfig = serde_json::from_value(value.clone())
                    .unwrap_or_else(|e| panic!("ipam {value} does not read back: {e}"));
                assert_eq!(back, ipam, "ipam → JSON → ipam differs: {value}");
            }
            Err(err) => {
                let err = berth_cni::Error::from(err);
                check_error(&err, &[berth_cni::error::code::DECODE]);
            }
        }
    }
    if let Some(Ok(args)) = env
        .get(CNI_ARGS)
        .map(|a| CniArgs::parse_with(a, &[BERTH_OWNER]))
    {
        match owner_of(&args) {
            Ok(Some(owner)) => {
                let shown = owner.to_string();
                assert_eq!(shown.parse::<Owner>().ok(), Some(owner), "{shown}");
            }
            Ok(None) => {}
            Err(err) => {
                assert!(matches!(err, crate::Error::InvalidOwner { .. }), "{err:?}");
                check_error(
                    &berth_cni::Error::from(err),
                    &[berth_cni::error::code::INVALID_CONFIG],
                );
            }
        }
    }
}

/// Fuzz target `cni_result`: the protocol's check.
pub fn check_cni_result(data: &[u8]) {
    berth_cni::fuzzing::check_cni_result(data);
}
