//! Lenient decoding helpers for CNI config keys, for `#[serde(deserialize_with = ...)]`:
//! input is read the way the Go library reads it (a `null` list is an empty list, an empty
//! string is an absent value), output is exact. Plugins use them for their own keys too.

use std::net::IpAddr;

use serde::{Deserialize, Deserializer};

/// `null` or absent → `T::default()`.
pub fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `null`, absent or `""` → `None`.
pub fn non_empty_string<'de, D>(d: D) -> Result<Option<String>, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()))
}

/// `null`, absent or `""` → `None` (Go's `net.IP` reads `""` as nil); else an IP address.
pub fn optional_ip<'de, D>(d: D) -> Result<Option<IpAddr>, D::Error>
where
    D: Deserializer<'de>,
{
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("invalid IP address {s:?}"))),
    }
}

/// `null`, absent or `0` → `None` (Go's `omitempty` integers treat 0 as unset).
pub fn non_zero<'de, D>(d: D) -> Result<Option<u32>, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(Option::<u32>::deserialize(d)?.filter(|v| *v != 0))
}

/// A limit written as a Go `omitempty` integer (Spiderpool's `log_file_max_size`, …): a
/// whole number, 0 or more; `null`, absent and 0 → `None`, since Go cannot tell 0 from
/// unset. Anything else — negative, fractional, a string such as `"100M"` — is an error
/// naming `key` and its `unit`. Call it from a one-line `deserialize_with` function per key.
pub fn limit<'de, D>(d: D, key: &str, unit: &str) -> Result<Option<u64>, D::Error>
where
    D: Deserializer<'de>,
{
    match Option::<serde_json::Value>::deserialize(d)? {
        None => Ok(None),
        Some(serde_json::Value::Number(n)) if n.as_u64().is_some() => {
            Ok(n.as_u64().filter(|n| *n != 0))
        }
        Some(other) => Err(serde::de::Error::custom(format!(
            "{key} must be a whole number of {unit}, 0 or more (0: the default), not {other}"
        ))),
    }
}

/// `null`, absent or `""` → `None`; else a path.
pub fn non_empty_path<'de, D>(d: D) -> Result<Option<std::path::PathBuf>, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(non_empty_string(d)?.map(Into::into))
}

/// A key that is present is `Some`, even when its value is `null` (`Some(None)` for an
/// `Option` target); with `#[serde(default)]` an absent key is `None`.
pub fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}
