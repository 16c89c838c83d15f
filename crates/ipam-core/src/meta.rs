//! Kubernetes object metadata, label selectors and the [`Object`] trait every stored kind has.
//!
//! Only the fields Berth reads are typed; everything else a Kubernetes object may carry in its
//! metadata (`managedFields`, ...) is kept in `extra`, so a Spiderpool object read and written
//! back loses nothing.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// `metadata` of a Kubernetes object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Object name, unique per kind (and namespace for namespaced kinds).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Namespace of namespaced kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Identity of this incarnation of the object, set when it is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Opaque version, set by the store on every write, compared only for equality.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// Spec generation, bumped by the store when the spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// RFC 3339 creation time, set by the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    /// RFC 3339 time of a delete that finalizers hold back: the object is terminating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Finalizers: while any is left, delete only marks the object terminating.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finalizers: Vec<String>,
    /// Owners of the object.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<OwnerReference>,
    /// Every other metadata field, kept as it was read.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl ObjectMeta {
    /// Metadata with just a name.
    pub fn named(name: impl Into<String>) -> Self {
        ObjectMeta {
            name: name.into(),
            ..Default::default()
        }
    }

    /// Whether a delete is pending on finalizers.
    pub fn is_terminating(&self) -> bool {
        self.deletion_timestamp.is_some()
    }

    /// A label value.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }

    /// An annotation value.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key).map(String::as_str)
    }
}

/// `metadata.ownerReferences[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerReference {
    /// API version of the owner.
    pub api_version: String,
    /// Kind of the owner.
    pub kind: String,
    /// Name of the owner.
    pub name: String,
    /// UID of the owner.
    #[serde(default)]
    pub uid: String,
    /// Whether the owner is the managing controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<bool>,
    /// Whether deletion of the owner waits for this object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_owner_deletion: Option<bool>,
}

/// A Kubernetes label selector (`matchLabels` and `matchExpressions`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// Labels that must be present with these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements, all of which must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelectorRequirement {
    /// The label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// Values for `In` / `NotIn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

impl LabelSelector {
    /// A selector of `key=value` pairs.
    pub fn eq<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        LabelSelector {
            match_labels: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            match_expressions: Vec::new(),
        }
    }

    /// Whether the selector has no requirement (it then matches everything).
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// Whether `labels` satisfy every requirement. An unknown operator matches nothing.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let have = labels.get(&r.key);
                match r.operator.as_str() {
                    "In" => have.is_some_and(|v| r.values.contains(v)),
                    "NotIn" => !have.is_some_and(|v| r.values.contains(v)),
                    "Exists" => have.is_some(),
                    "DoesNotExist" => have.is_none(),
                    _ => false,
                }
            })
    }

    /// A problem with the selector, if it is malformed: an unknown operator, values where none
    /// belong or none where some must be, or a key or value that is not a Kubernetes label's.
    pub fn problem(&self) -> Option<String> {
        for (k, v) in &self.match_labels {
            if let Some(p) = label_key_problem(k).or_else(|| label_value_problem(v)) {
                return Some(format!("matchLabels {k:?}: {v:?}: {p}"));
            }
        }
        for r in &self.match_expressions {
            if let Some(p) = label_key_problem(&r.key)
                .or_else(|| r.values.iter().find_map(|v| label_value_problem(v)))
            {
                return Some(format!("matchExpressions on key {:?}: {p}", r.key));
            }
            match r.operator.as_str() {
                "In" | "NotIn" if r.values.is_empty() => {
                    return Some(format!(
                        "operator {} on key {:?} needs values",
                        r.operator, r.key
                    ));
                }
                "Exists" | "DoesNotExist" if !r.values.is_empty() => {
                    return Some(format!(
                        "operator {} on key {:?} takes no values",
                        r.operator, r.key
                    ));
                }
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                other => return Some(format!("unknown operator {other:?} on key {:?}", r.key)),
            }
        }
        None
    }
}

/// Why `key` is not a Kubernetes label key: an optional DNS subdomain prefix (at most 253
/// characters) and `/`, then a name of at most 63 alphanumerics, `-`, `_` and `.`, beginning and
/// ending with an alphanumeric.
pub fn label_key_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if prefix.is_empty() || prefix.len() > 253 || !prefix.split('.').all(label_ok) {
            return Some(format!(
                "the key's prefix {prefix:?} is not a DNS subdomain (lower-case letters, \
                 digits, '-' and '.', at most 253)"
            ));
        }
    }
    if name.is_empty() {
        return Some("the key's name is empty".into());
    }
    label_value_problem(name).map(|p| format!("the key's name {p}"))
}

/// Why `value` is not a Kubernetes label value: at most 63 alphanumerics, `-`, `_` and `.`,
/// beginning and ending with an alphanumeric (or empty).
pub fn label_value_problem(value: &str) -> Option<String> {
    let ok = value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && value
            .bytes()
            .next()
            .is_none_or(|b| b.is_ascii_alphanumeric())
        && value
            .bytes()
            .last()
            .is_none_or(|b| b.is_ascii_alphanumeric());
    (!ok).then(|| {
        "must be at most 63 letters, digits, '-', '_' and '.', beginning and ending with a \
         letter or digit"
            .to_string()
    })
}

impl fmt::Display for LabelSelector {
    /// `kubectl`'s selector syntax: `a=b,c in (d,e),!f`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for r in &self.match_expressions {
            parts.push(match r.operator.as_str() {
                "In" => format!("{} in ({})", r.key, r.values.join(",")),
                "NotIn" => format!("{} notin ({})", r.key, r.values.join(",")),
                "Exists" => r.key.clone(),
                "DoesNotExist" => format!("!{}", r.key),
                other => format!("{} {other} ({})", r.key, r.values.join(",")),
            });
        }
        f.write_str(&parts.join(","))
    }
}

impl std::str::FromStr for LabelSelector {
    type Err = String;

    /// `kubectl`'s selector syntax (`-l`): requirements separated by commas, each `key=value`
    /// (or `key==value`), `key!=value`, `key in (v1,v2)`, `key notin (v1,v2)`, `key` (exists)
    /// or `!key` (does not exist). `key!=value` holds when the label is absent too, as in
    /// Kubernetes: it is `NotIn` with one value. The error says which requirement is wrong.
    fn from_str(text: &str) -> Result<Self, String> {
        let mut selector = LabelSelector::default();
        for part in split_requirements(text)? {
            let part = part.trim();
            let fail = |why: &str| Err(format!("invalid label selector {text:?}: {part:?}: {why}"));
            let mut set_based = |key: &str, operator: &str, values: Vec<String>| {
                selector.match_expressions.push(LabelSelectorRequirement {
                    key: key.to_owned(),
                    operator: operator.to_owned(),
                    values,
                });
            };
            if part.is_empty() {
                return fail("an empty requirement");
            }
            if let Some(key) = part.strip_prefix('!') {
                let key = key.trim();
                if !is_label_key(key) {
                    return fail("not a label key");
                }
                set_based(key, "DoesNotExist", Vec::new());
            } else if let Some((key, op, values)) = set_requirement(part) {
                if !is_label_key(key) {
                    return fail("not a label key");
                }
                let Some(inner) = values
                    .trim()
                    .strip_prefix('(')
                    .and_then(|v| v.strip_suffix(')'))
                else {
                    return fail("the values go in parentheses: key in (a,b)");
                };
                let values: Vec<String> = inner.split(',').map(|v| v.trim().to_owned()).collect();
                if let Some(bad) = values.iter().find(|v| !is_label_value(v)) {
                    return fail(&format!("{bad:?} is not a label value"));
                }
                set_based(key, op, values);
            } else if let Some((key, op, value)) = ["!=", "==", "="]
                .into_iter()
                .find_map(|op| part.split_once(op).map(|(k, v)| (k.trim(), op, v.trim())))
            {
                if !is_label_key(key) {
                    return fail("not a label key");
                }
                if !is_label_value(value) {
                    return fail(&format!("{value:?} is not a label value"));
                }
                if op == "!=" {
                    set_based(key, "NotIn", vec![value.to_owned()]);
                } else if selector.match_labels.contains_key(key) {
                    // A second value for one key: matchLabels holds one, In holds both.
                    set_based(key, "In", vec![value.to_owned()]);
                } else {
                    selector
                        .match_labels
                        .insert(key.to_owned(), value.to_owned());
                }
            } else if is_label_key(part) {
                set_based(part, "Exists", Vec::new());
            } else {
                return fail("not key=value, key!=value, key in (…), key notin (…), key or !key");
            }
        }
        Ok(selector)
    }
}

/// The comma-separated requirements of a selector string, keeping `in (a,b)` whole.
fn split_requirements(text: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| format!("invalid label selector {text:?}: unbalanced ')'"))?
            }
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("invalid label selector {text:?}: unclosed '('"));
    }
    parts.push(&text[start..]);
    Ok(parts)
}

/// `key in (…)` / `key notin (…)`: the key, the operator, and the rest.
fn set_requirement(part: &str) -> Option<(&str, &'static str, &str)> {
    let (key, rest) = part.split_once(char::is_whitespace)?;
    let rest = rest.trim_start();
    [("notin", "NotIn"), ("in", "In")]
        .into_iter()
        .find_map(|(word, op)| {
            rest.strip_prefix(word)
                .filter(|r| r.trim_start().starts_with('('))
                .map(|r| (key, op, r))
        })
}

/// A Kubernetes label key: an optional DNS prefix and `/`, then a name of alphanumerics,
/// `-`, `_` and `.` (at most 63 characters, starting and ending alphanumeric).
fn is_label_key(key: &str) -> bool {
    let name = match key.rsplit_once('/') {
        Some((prefix, name)) => {
            if prefix.is_empty()
                || prefix.len() > 253
                || !prefix
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                return false;
            }
            name
        }
        None => key,
    };
    !name.is_empty() && is_label_value(name)
}

/// A Kubernetes label value: empty, or up to 63 alphanumerics, `-`, `_` and `.`, starting
/// and ending alphanumeric.
fn is_label_value(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 63
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// The kinds Berth stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `SpiderSubnet` (cluster-scoped).
    SpiderSubnet,
    /// `SpiderIPPool` (cluster-scoped).
    SpiderIPPool,
    /// `SpiderEndpoint` (namespaced).
    SpiderEndpoint,
    /// `SpiderReservedIP` (cluster-scoped).
    SpiderReservedIP,
    /// `apps/v1` `Deployment` (namespaced).
    Deployment,
    /// `apps/v1` `StatefulSet` (namespaced).
    StatefulSet,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 6] = [
        Kind::SpiderSubnet,
        Kind::SpiderIPPool,
        Kind::SpiderEndpoint,
        Kind::SpiderReservedIP,
        Kind::Deployment,
        Kind::StatefulSet,
    ];

    /// The `kind` string.
    pub fn name(self) -> &'static str {
        match self {
            Kind::SpiderSubnet => "SpiderSubnet",
            Kind::SpiderIPPool => "SpiderIPPool",
            Kind::SpiderEndpoint => "SpiderEndpoint",
            Kind::SpiderReservedIP => "SpiderReservedIP",
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
        }
    }

    /// The `apiVersion` string.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Deployment | Kind::StatefulSet => "apps/v1",
            _ => crate::SPIDERPOOL_API_VERSION,
        }
    }

    /// The lower-case plural resource name (`spiderippools`).
    pub fn plural(self) -> &'static str {
        match self {
            Kind::SpiderSubnet => "spidersubnets",
            Kind::SpiderIPPool => "spiderippools",
            Kind::SpiderEndpoint => "spiderendpoints",
            Kind::SpiderReservedIP => "spiderreservedips",
            Kind::Deployment => "deployments",
            Kind::StatefulSet => "statefulsets",
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn is_namespaced(self) -> bool {
        matches!(
            self,
            Kind::SpiderEndpoint | Kind::Deployment | Kind::StatefulSet
        )
    }

    /// Whether `status` is a subresource: `update` leaves it alone and `update_status` writes
    /// only it. SpiderEndpoint has none (its status is written by a plain update).
    pub fn has_status_subresource(self) -> bool {
        !matches!(self, Kind::SpiderEndpoint | Kind::SpiderReservedIP)
    }

    /// kubectl's short name (`ss`, `sp`, `se`, `sr`, `deploy`, `sts`).
    pub fn short_name(self) -> &'static str {
        match self {
            Kind::SpiderSubnet => "ss",
            Kind::SpiderIPPool => "sp",
            Kind::SpiderEndpoint => "se",
            Kind::SpiderReservedIP => "sr",
            Kind::Deployment => "deploy",
            Kind::StatefulSet => "sts",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A kind name that is none of Berth's kinds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown kind {0:?}; expected SpiderSubnet, SpiderIPPool, SpiderEndpoint, SpiderReservedIP, Deployment or StatefulSet"
)]
pub struct UnknownKind(pub String);

impl std::str::FromStr for Kind {
    type Err = UnknownKind;

    /// The kind of its exact name, as objects and the agent's wire write it (`SpiderIPPool`).
    fn from_str(s: &str) -> Result<Kind, UnknownKind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownKind(s.to_owned()))
    }
}

impl Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Kind, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// The address of an object in a store: kind, namespace (namespaced kinds only) and name. In
/// JSON: `{"kind": "SpiderIPPool", "namespace"?: "...", "name": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectKey {
    /// The kind.
    pub kind: Kind,
    /// The namespace, `None` for cluster-scoped kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The name.
    pub name: String,
}

impl ObjectKey {
    /// The key of a cluster-scoped object.
    pub fn cluster(kind: Kind, name: impl Into<String>) -> Self {
        ObjectKey {
            kind,
            namespace: None,
            name: name.into(),
        }
    }

    /// The key of a namespaced object.
    pub fn namespaced(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            kind,
            namespace: Some(namespace.into()),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    /// `SpiderIPPool "pool-a"` or `Deployment "default/test-app"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} \"{}/{}\"", self.kind, ns, self.name),
            None => write!(f, "{} \"{}\"", self.kind, self.name),
        }
    }
}

/// A kind Berth stores: serde shape plus access to its metadata.
pub trait Object:
    Serialize + DeserializeOwned + Clone + fmt::Debug + Send + Sync + 'static
{
    /// The kind of every value of this type.
    const KIND: Kind;

    /// The metadata.
    fn meta(&self) -> &ObjectMeta;

    /// The metadata, mutably.
    fn meta_mut(&mut self) -> &mut ObjectMeta;

    /// The store key of this object.
    fn key(&self) -> ObjectKey {
        ObjectKey {
            kind: Self::KIND,
            namespace: if Self::KIND.is_namespaced() {
                Some(
                    self.meta()
                        .namespace
                        .clone()
                        .unwrap_or_else(|| "default".into()),
                )
            } else {
                None
            },
            name: self.meta().name.clone(),
        }
    }

    /// The object's name.
    fn name(&self) -> &str {
        &self.meta().name
    }

    /// The stored version, if the object came from a store.
    fn version(&self) -> Option<&str> {
        self.meta().resource_version.as_deref()
    }
}

/// Declares a Spiderpool kind: a struct with `apiVersion`, `kind` and `metadata` as
/// Kubernetes writes them, followed by the given fields, and its [`Object`] impl.
///
/// `$kind_default` names the serde default of `kind`, always `"<Name>::kind_name"` (serde
/// takes the path as a string literal, which a macro cannot build from an identifier).
macro_rules! spiderpool_kind {
    (
        $(#[$attr:meta])*
        pub struct $name:ident (kind default $kind_default:tt) {
            $($fields:tt)*
        }
    ) => {
        $(#[$attr])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            /// `spiderpool.spidernet.io/v2beta1`.
            #[serde(default = "crate::meta::spiderpool_api_version")]
            pub api_version: String,
            #[doc = concat!("`", stringify!($name), "`.")]
            #[serde(default = $kind_default)]
            pub kind: String,
            /// Metadata.
            pub metadata: $crate::meta::ObjectMeta,
            $($fields)*
        }

        impl $name {
            fn kind_name() -> String {
                stringify!($name).into()
            }
        }

        impl $crate::meta::Object for $name {
            const KIND: $crate::meta::Kind = $crate::meta::Kind::$name;
            fn meta(&self) -> &$crate::meta::ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut $crate::meta::ObjectMeta {
                &mut self.metadata
            }
        }
    };
}
pub(crate) use spiderpool_kind;

/// Declares the spec of a kind that lends the addresses of one CIDR (pools to pods, subnets
/// to pools): the fields pools and subnets share, with Spiderpool's names, followed by the
/// given fields.
macro_rules! cidr_spec {
    (
        $(#[$attr:meta])*
        pub struct $name:ident {
            $($fields:tt)*
        }
    ) => {
        $(#[$attr])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        pub struct $name {
            /// 4 or 6; derived from `subnet` when absent.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub ip_version: Option<i64>,
            /// The CIDR, kept as written (`10.6.0.1/16` means 10.6.0.0/16).
            #[serde(deserialize_with = "crate::range::deserialize_spec_subnet")]
            pub subnet: ipnet::IpNet,
            /// The IPs lent: by a pool to pods, by a subnet to pools.
            #[serde(default, skip_serializing_if = "crate::range::IpSet::is_empty")]
            pub ips: $crate::range::IpSet,
            /// IPs of `ips` never lent.
            #[serde(
                default,
                rename = "excludeIPs",
                skip_serializing_if = "crate::range::IpSet::is_empty"
            )]
            pub exclude_ips: $crate::range::IpSet,
            /// Gateway given to pods. A pool without one inherits the gateway of the subnet
            /// of its CIDR.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub gateway: Option<std::net::IpAddr>,
            /// Routes given to pods. A pool without them inherits the subnet's (when absent,
            /// not when empty).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub routes: Option<Vec<$crate::addressing::Route>>,
            $($fields)*
        }
    };
}
pub(crate) use cidr_spec;

/// Serde default for `apiVersion` of Spiderpool kinds.
pub(crate) fn spiderpool_api_version() -> String {
    crate::SPIDERPOOL_API_VERSION.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors_match_like_kubernetes() {
        let sel: LabelSelector = serde_json::from_str(
            r#"{"matchLabels":{"zone":"a"},
                "matchExpressions":[{"key":"tier","operator":"In","values":["web","api"]},
                                    {"key":"legacy","operator":"DoesNotExist"}]}"#,
        )
        .unwrap();
        assert!(sel.matches(&labels(&[("zone", "a"), ("tier", "web")])));
        assert!(!sel.matches(&labels(&[("zone", "a"), ("tier", "db")])));
        assert!(!sel.matches(&labels(&[("zone", "a"), ("tier", "web"), ("legacy", "1")])));
        assert!(!sel.matches(&labels(&[("tier", "web")])));
        assert!(LabelSelector::default().matches(&labels(&[])));
        assert_eq!(sel.to_string(), "zone=a,tier in (web,api),!legacy");
    }

    #[test]
    fn selectors_parse_from_kubectls_syntax() {
        let sel: LabelSelector = "app=web, tier!=db,zone in (a, b),legacy,!canary,x notin (1)"
            .parse()
            .unwrap();
        assert_eq!(
            sel.to_string(),
            "app=web,tier notin (db),zone in (a,b),legacy,!canary,x notin (1)"
        );
        assert!(sel.matches(&labels(&[("app", "web"), ("zone", "b"), ("legacy", "")])));
        assert!(!sel.matches(&labels(&[("app", "web"), ("zone", "c"), ("legacy", "")])));
        assert!(!sel.matches(&labels(&[
            ("app", "web"),
            ("zone", "a"),
            ("legacy", ""),
            ("tier", "db")
        ])));
        assert!(!sel.matches(&labels(&[
            ("app", "web"),
            ("zone", "a"),
            ("legacy", ""),
            ("canary", "1")
        ])));
        // Spiderpool's own labels have prefixes; == is =; the same key twice needs both.
        let sel: LabelSelector = "ipam.spidernet.io/ippool-cidr==10-6-0-0-16"
            .parse()
            .unwrap();
        assert!(sel.matches(&labels(&[("ipam.spidernet.io/ippool-cidr", "10-6-0-0-16")])));
        let sel: LabelSelector = "a=1,a=2".parse().unwrap();
        assert!(!sel.matches(&labels(&[("a", "1")])));
        assert_eq!(
            "".parse::<LabelSelector>().unwrap_err(),
            "invalid label selector \"\": \"\": an empty requirement"
        );
        for (bad, why) in [
            ("a in b", "not key=value"),
            ("a in (b", "unclosed '('"),
            ("a=b)", "unbalanced ')'"),
            ("a=b c", "\"b c\" is not a label value"),
            ("=b", "not a label key"),
            ("a,,b", "an empty requirement"),
            ("a in (x y)", "\"x y\" is not a label value"),
        ] {
            let err = bad.parse::<LabelSelector>().unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn malformed_selectors_are_named() {
        let bad = LabelSelector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![LabelSelectorRequirement {
                key: "k".into(),
                operator: "Like".into(),
                values: vec![],
            }],
        };
        assert!(bad.problem().unwrap().contains("Like"));
        assert!(!bad.matches(&labels(&[("k", "v")])));
    }

    #[test]
    fn kinds_read_and_write_their_exact_names() {
        for kind in Kind::ALL {
            assert_eq!(kind.name().parse::<Kind>(), Ok(kind));
            let json = serde_json::to_value(kind).unwrap();
            assert_eq!(json, kind.name());
            assert_eq!(serde_json::from_value::<Kind>(json).unwrap(), kind);
        }
        // Short names, plurals and other cases are the CLI's to accept, not the wire's.
        for lenient in ["sp", "spiderippool", "SpiderIPPools", "Pod"] {
            assert_eq!(lenient.parse::<Kind>(), Err(UnknownKind(lenient.into())));
        }
        assert!(serde_json::from_str::<Kind>(r#""deploy""#).is_err());
    }

    #[test]
    fn metadata_keeps_unknown_fields() {
        let json =
            r#"{"name":"a","uid":"u","managedFields":[{"manager":"kubectl"}],"labels":{"x":"y"}}"#;
        let m: ObjectMeta = serde_json::from_str(json).unwrap();
        assert_eq!(m.extra.len(), 1);
        let back: serde_json::Value = serde_json::to_value(&m).unwrap();
        assert_eq!(
            back,
            serde_json::from_str::<serde_json::Value>(json).unwrap()
        );
    }
}
