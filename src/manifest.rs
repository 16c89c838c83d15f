//! Reading `kubectl apply`-style manifests: multi-document YAML or JSON, Spiderpool kinds and
//! apps/v1 Deployments and StatefulSets.

use ipam_core::engine::AnyObject;
use serde::Deserialize;

/// A manifest that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: document {index}{name}: {reason}")]
pub struct ManifestError {
    /// Where the manifest came from (a file name, or `-` for stdin).
    pub source_name: String,
    /// 1-based index of the document.
    pub index: usize,
    /// ` (Kind "name")` when known.
    pub name: String,
    /// What is wrong.
    pub reason: String,
}

/// Parses every document of a manifest (YAML, which includes JSON). Empty documents are
/// skipped; a `List` (as `berth get -o json` writes) is unpacked.
pub fn parse(source_name: &str, text: &str) -> Result<Vec<AnyObject>, ManifestError> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let index = i + 1;
        let err = |name: String, reason: String| ManifestError {
            source_name: source_name.to_string(),
            index,
            name,
            reason,
        };
        let value = serde_json::Value::deserialize(doc)
            .map_err(|e| err(String::new(), format!("not YAML or JSON: {e}")))?;
        if value.is_null() {
            continue;
        }
        let items = if value.get("kind").and_then(|k| k.as_str()) == Some("List") {
            value
                .get("items")
                .and_then(|i| i.as_array())
                .cloned()
                .unwrap_or_default()
        } else {
            vec![value]
        };
        for item in items {
            let name = match (
                item.get("kind").and_then(|k| k.as_str()),
                item.pointer("/metadata/name").and_then(|n| n.as_str()),
            ) {
                (Some(k), Some(n)) => format!(" ({k} {n:?})"),
                (Some(k), None) => format!(" ({k})"),
                _ => String::new(),
            };
            let obj = AnyObject::from_value(item).map_err(|e| err(name, e.to_string()))?;
            out.push(obj);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_several_documents_and_names_the_bad_one() {
        let text = "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderSubnet\nmetadata:\n  name: a\nspec:\n  subnet: 10.6.0.1/16\n  vlan: 0\n---\n---\napiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderIPPool\nmetadata:\n  name: b\nspec:\n  subnet: 10.6.0.0/16\n  ips: [10.6.0.300]\n";
        let err = parse("f.yaml", text).unwrap_err().to_string();
        assert!(
            err.starts_with("f.yaml: document 3 (SpiderIPPool \"b\"):"),
            "{err}"
        );
        assert!(err.contains("10.6.0.300"), "{err}");
        assert_eq!(
            parse("f.yaml", text.split("---").next().unwrap())
                .unwrap()
                .len(),
            1
        );
        let garbage = parse("-", "kind: [").unwrap_err().to_string();
        assert!(garbage.contains("not YAML or JSON"), "{garbage}");
        let unknown = parse("-", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n")
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("cannot be applied"), "{unknown}");
    }
}
