//! Policy files: a YAML stream of `KgatePolicy` documents, exactly as they would be
//! applied to a cluster, for standalone mode, tests and `kgate policy check`.
//! Errors carry the file, the document and the line or field they are about.

use std::{collections::HashSet, path::Path};

use serde::Deserialize;

use super::{
    compile::{self, CompiledPolicy},
    types::KgatePolicy,
};

#[derive(Debug, thiserror::Error)]
pub(crate) enum FileError {
    #[error("{file}: {source}")]
    ReadFailed {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: document {doc}: {message}")]
    Invalid {
        file: String,
        /// 1-based index of the YAML document.
        doc: usize,
        message: String,
    },
}

/// Reads, parses and compiles every policy of `path`.
pub(crate) fn load(path: &Path) -> Result<Vec<CompiledPolicy>, FileError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| FileError::ReadFailed {
        file: file.clone(),
        source,
    })?;
    parse(&text, &file)
}

/// Parses and compiles the policies of `text` (named `file` in errors).
pub(crate) fn parse(text: &str, file: &str) -> Result<Vec<CompiledPolicy>, FileError> {
    let invalid = |doc: usize, message: String| FileError::Invalid {
        file: file.to_owned(),
        doc,
        message,
    };
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let doc = i + 1;
        let value =
            serde_yaml::Value::deserialize(document).map_err(|e| invalid(doc, e.to_string()))?;
        if value.is_null() {
            continue; // an empty document, e.g. after a trailing `---`
        }
        let api_version = value
            .get("apiVersion")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let kind = value.get("kind").and_then(|v| v.as_str()).unwrap_or("");
        if (api_version, kind) != ("kgate.io/v1alpha1", "KgatePolicy") {
            return Err(invalid(
                doc,
                format!(
                    "expected apiVersion kgate.io/v1alpha1, kind KgatePolicy; found {api_version:?}, {kind:?}"
                ),
            ));
        }
        let policy: KgatePolicy =
            serde_yaml::from_value(value).map_err(|e| invalid(doc, e.to_string()))?;
        let name = policy.metadata.name.clone().unwrap_or_default();
        if !names.insert(name.clone()) {
            return Err(invalid(doc, format!("duplicate policy name {name:?}")));
        }
        out.push(compile::compile(&name, &policy.spec).map_err(|e| invalid(doc, e.to_string()))?);
    }
    Ok(out)
}
