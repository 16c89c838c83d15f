//! The CRDs of Berth's kinds, generated from the [`v2beta1`](crate::v2beta1) types, and their
//! YAML (`deploy/crds/*.yaml`, `berth crds`).
//!
//! Three kinds come from kube's `CustomResource` derive and schemars; `SpiderEndpoint`, which the
//! derive cannot express, is written by hand from the same schema generator. [`all`] then gives
//! them the few things kube's derive leaves out and Spiderpool's CRDs (controller-gen's) have:
//!
//! - `apiVersion`, `kind` and `metadata` in the schema's root properties;
//! - `names.listKind`;
//! - `subresources: {}` on the kinds without a status subresource;
//! - no `nullable`: Go's optional fields are pointers with `omitempty`, never `null`, and
//!   Spiderpool's schemas do not accept `null` (the API server drops such values);
//! - no `required: [spec]` at the root: Go's `spec` is `omitempty` there.

use std::io;
use std::path::{Path, PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceSubresources, JSONSchemaProps,
};
use kube::core::crd::v1::CustomResourceExt;
use kube::core::schema::{OptionalEnum, OptionalIntOrString, StructuralSchemaRewriter};
use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use schemars::transform::AddNullable;
use serde_json::{Value, json};

use crate::v2beta1::{SpiderEndpoint, SpiderIPPool, SpiderReservedIP, SpiderSubnet};

/// The first line of every generated file.
pub const HEADER: &str =
    "# Generated from the Rust types of crates/ipam-store-k8s by `berth crds --dir deploy/crds`.\n";

/// The command that writes `deploy/crds/` again, from the workspace root.
pub const REGENERATE: &str = "cargo run --quiet -- crds --dir deploy/crds";

/// The CRDs of SpiderEndpoint, SpiderIPPool, SpiderReservedIP and SpiderSubnet, in the order
/// of their file names.
pub fn all() -> Vec<CustomResourceDefinition> {
    [
        SpiderEndpoint::crd(),
        SpiderIPPool::crd(),
        SpiderReservedIP::crd(),
        SpiderSubnet::crd(),
    ]
    .into_iter()
    .map(as_controller_gen_writes_it)
    .collect()
}

/// `<group>_<plural>.yaml`, the name Spiderpool's chart gives the same CRD.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}

/// One CRD as a YAML file: [`HEADER`], `---`, the document, its keys sorted as controller-gen
/// sorts them and whole numbers written as integers (`minimum: 0`, not `0.0`).
pub fn to_yaml(crd: &CustomResourceDefinition) -> String {
    let value = serde_json::to_value(crd).expect("a CRD serializes");
    let doc = serde_yaml::to_string(&sorted(value)).expect("a CRD serializes to YAML");
    format!("{HEADER}---\n{doc}")
}

/// `value` as YAML with every mapping's keys in order, whatever order serde_json keeps.
fn sorted(value: Value) -> serde_yaml::Value {
    match value {
        Value::Null => serde_yaml::Value::Null,
        Value::Bool(b) => serde_yaml::Value::Bool(b),
        Value::Number(n) => match n.as_f64() {
            // The schema's bounds are f64 in k8s-openapi; Spiderpool's are integers.
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e15 => {
                serde_yaml::Value::Number((f as i64).into())
            }
            _ => serde_yaml::to_value(&n).expect("a number"),
        },
        Value::String(s) => serde_yaml::Value::String(s),
        Value::Array(items) => items.into_iter().map(sorted).collect(),
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_yaml::Value::Mapping(
                entries
                    .into_iter()
                    .map(|(k, v)| (serde_yaml::Value::String(k), sorted(v)))
                    .collect(),
            )
        }
    }
}

/// Every file of `deploy/crds/`: its name and its content.
pub fn files() -> Vec<(String, String)> {
    all()
        .iter()
        .map(|crd| (file_name(crd), to_yaml(crd)))
        .collect()
}

/// What `berth crds` prints: the files one after the other, as `cat deploy/crds/*.yaml` does.
pub fn yaml() -> String {
    files().into_iter().map(|(_, text)| text).collect()
}

/// Writes the files into `dir` (created if missing) and returns their paths.
pub fn write_to(dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    files()
        .into_iter()
        .map(|(name, text)| {
            let path = dir.join(name);
            std::fs::write(&path, text)?;
            Ok(path)
        })
        .collect()
}

/// The OpenAPI schema of `T`, made exactly as kube's `CustomResource` derive makes it.
pub(crate) fn schema_for<T: JsonSchema>() -> JSONSchemaProps {
    let generator = SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .with_transform(AddNullable::default())
        .with_transform(StructuralSchemaRewriter)
        .with_transform(OptionalEnum)
        .with_transform(OptionalIntOrString)
        .into_generator();
    serde_json::to_value(generator.into_root_schema_for::<T>())
        .and_then(serde_json::from_value)
        .expect("schemars makes a valid JSONSchemaProps")
}

/// Adds what controller-gen writes and kube's derive does not (see the module's doc).
fn as_controller_gen_writes_it(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    let names = &mut crd.spec.names;
    names.list_kind = Some(format!("{}List", names.kind));
    for version in &mut crd.spec.versions {
        version
            .subresources
            .get_or_insert_with(CustomResourceSubresources::default);
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            let mut value = serde_json::to_value(&*schema).expect("a schema serializes");
            tidy(&mut value);
            let root = value.as_object_mut().expect("a root schema is an object");
            // Go's root has `spec` with omitempty: required by nothing; the type name is no title.
            root.remove("required");
            root.remove("title");
            let properties = root.entry("properties").or_insert_with(|| json!({}));
            properties["apiVersion"] = json!({
                "description": "The versioned schema of this representation of an object.",
                "type": "string",
            });
            properties["kind"] = json!({
                "description": "The REST resource this object represents.",
                "type": "string",
            });
            properties["metadata"] = json!({"type": "object"});
            *schema = serde_json::from_value(value).expect("still a schema");
        }
    }
    crd
}

/// Removes every `nullable` of a schema, and joins the lines of each description (doc comments
/// wrap where the source does; Kubernetes' descriptions are one line per paragraph).
fn tidy(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            map.remove("nullable");
            if let Some(Value::String(text)) = map.get_mut("description") {
                *text = text
                    .split("\n\n")
                    .map(|paragraph| paragraph.split_whitespace().collect::<Vec<_>>().join(" "))
                    .collect::<Vec<_>>()
                    .join("\n\n");
            }
            map.values_mut().for_each(tidy);
        }
        Value::Array(items) => items.iter_mut().for_each(tidy),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `deploy/crds/` of this repository.
    fn committed_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds")
    }

    /// Where two texts first differ, as `line N: committed "..." / generated "..."`.
    fn first_difference(committed: &str, generated: &str) -> String {
        let (mut c, mut g) = (committed.lines(), generated.lines());
        for n in 1.. {
            match (c.next(), g.next()) {
                (Some(a), Some(b)) if a == b => continue,
                (None, None) => return "line endings".into(),
                (a, b) => {
                    return format!(
                        "line {n}: committed {:?} / generated {:?}",
                        a.unwrap_or("<end>"),
                        b.unwrap_or("<end>")
                    );
                }
            }
        }
        unreachable!()
    }

    #[test]
    fn committed_files_are_what_the_types_generate() {
        let dir = committed_dir();
        let generated = files();
        let mut stale = Vec::new();
        for (name, text) in &generated {
            match std::fs::read_to_string(dir.join(name)) {
                Ok(committed) if committed == *text => {}
                Ok(committed) => stale.push(format!(
                    "{name} differs at {}",
                    first_difference(&committed, text)
                )),
                Err(e) => stale.push(format!("{name}: {e}")),
            }
        }
        for entry in std::fs::read_dir(&dir).expect("deploy/crds/ exists") {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if name.ends_with(".yaml") && !generated.iter().any(|(n, _)| *n == name) {
                stale.push(format!("{name} is generated by nothing"));
            }
        }
        assert!(
            stale.is_empty(),
            "deploy/crds/ is not what the types generate:\n  {}\nRun `{REGENERATE}` from the \
             workspace root and commit the result.",
            stale.join("\n  ")
        );
    }

    #[test]
    fn every_kind_has_spiderpools_names_scope_and_subresources() {
        let summary: Vec<String> = all()
            .iter()
            .map(|crd| {
                let names = &crd.spec.names;
                let version = &crd.spec.versions[0];
                let status = version
                    .subresources
                    .as_ref()
                    .is_some_and(|s| s.status.is_some());
                format!(
                    "{} {} {}/{} {} list={} short={:?} categories={:?} served={} storage={} status-subresource={status}",
                    crd.metadata.name.as_deref().unwrap(),
                    names.kind,
                    crd.spec.group,
                    version.name,
                    crd.spec.scope,
                    names.list_kind.as_deref().unwrap(),
                    names.short_names.as_deref().unwrap(),
                    names.categories.as_deref().unwrap(),
                    version.served,
                    version.storage,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                "spiderendpoints.spiderpool.spidernet.io SpiderEndpoint spiderpool.spidernet.io/v2beta1 Namespaced list=SpiderEndpointList short=[\"se\"] categories=[\"spiderpool\"] served=true storage=true status-subresource=false",
                "spiderippools.spiderpool.spidernet.io SpiderIPPool spiderpool.spidernet.io/v2beta1 Cluster list=SpiderIPPoolList short=[\"sp\"] categories=[\"spiderpool\"] served=true storage=true status-subresource=true",
                "spiderreservedips.spiderpool.spidernet.io SpiderReservedIP spiderpool.spidernet.io/v2beta1 Cluster list=SpiderReservedIPList short=[\"sr\"] categories=[\"spiderpool\"] served=true storage=true status-subresource=false",
                "spidersubnets.spiderpool.spidernet.io SpiderSubnet spiderpool.spidernet.io/v2beta1 Cluster list=SpiderSubnetList short=[\"ss\"] categories=[\"spiderpool\"] served=true storage=true status-subresource=true",
            ]
        );
    }

    #[test]
    fn schemas_are_controller_gens_shape() {
        for crd in all() {
            let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
            let text = schema.to_string();
            let kind = &crd.spec.names.kind;
            assert!(!text.contains("\"nullable\""), "{kind}: {text}");
            assert!(!text.contains("\"title\""), "{kind}: {text}");
            let root = &schema["openAPIV3Schema"];
            assert_eq!(root.get("required"), None, "{kind}");
            for field in ["apiVersion", "kind"] {
                assert_eq!(root["properties"][field]["type"], "string", "{kind}");
            }
            assert_eq!(root["properties"]["metadata"], json!({"type": "object"}));
        }
    }

    #[test]
    fn the_stream_is_the_files_in_order_each_with_its_header() {
        let files = files();
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        let mut sorted_names = names.clone();
        sorted_names.sort();
        assert_eq!(
            names, sorted_names,
            "cat deploy/crds/*.yaml reads them in this order"
        );
        assert_eq!(
            yaml(),
            files.iter().map(|(_, t)| t.as_str()).collect::<String>()
        );
        for (name, text) in &files {
            assert!(text.starts_with(&format!("{HEADER}---\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n")), "{name}");
        }
    }

    #[test]
    fn write_to_creates_the_directory_and_every_file() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("deploy/crds");
        let written = write_to(&nested).unwrap();
        assert_eq!(written.len(), 4);
        for (path, (name, text)) in written.iter().zip(files()) {
            assert_eq!(path, &nested.join(name));
            assert_eq!(std::fs::read_to_string(path).unwrap(), text);
        }
    }
}
