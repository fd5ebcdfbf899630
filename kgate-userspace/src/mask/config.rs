//! What to mask, as the operator writes it (the `mask:` section of the agent config).
//!
//! Secret values are always masked; this section only adds rules, exempts users and
//! bounds memory. Patterns are compiled once by [`super::Masker::new`], which
//! `Config::parse` calls to reject a bad pattern at start-up.

use serde::Deserialize;

/// The default cap on one masked unit (a single object, a list item, a Table row or a
/// watch event): 64 MiB, far above the API server's own 3 MiB etcd object limit.
pub(crate) const DEFAULT_MAX_OBJECT_BYTES: usize = 64 << 20;

/// Response masking. Secret `data` and `stringData` values are always replaced by a
/// placeholder (keys kept), also inside a Secret's
/// `kubectl.kubernetes.io/last-applied-configuration` annotation, which embeds it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MaskConfig {
    /// Regular expressions over ConfigMap keys: the values of matching keys in `data`
    /// and `binaryData` are masked. Unanchored (`^…$` to match whole keys). Default:
    /// none (ConfigMaps pass unmasked and unparsed).
    #[serde(default)]
    pub config_map_keys: Vec<String>,
    /// Regular expressions over container environment variable names (e.g.
    /// `PASSWORD|TOKEN|KEY`): the `value` of matching `env` entries is masked in pods
    /// and in the pod templates of deployments, statefulsets, daemonsets, replicasets,
    /// replicationcontrollers, jobs, cronjobs and podtemplates. Unanchored. Default:
    /// none.
    #[serde(default)]
    pub env_names: Vec<String>,
    /// Annotation names (exact) whose values are masked on every object of every
    /// resource, which makes every object-returning request go through the masker (and
    /// upstream as JSON). Default: none.
    #[serde(default)]
    pub annotations: Vec<String>,
    /// Users (globs over the username, e.g. `system:serviceaccount:vault:*`) who read
    /// every response unmasked. Default: none.
    #[serde(default)]
    pub unmasked_subjects: Vec<String>,
    /// Largest single unit (an object, a list item, a Table row, a watch event) the
    /// masker holds, in bytes; a larger one ends the response with an error, never
    /// unmasked. Default 64 MiB.
    #[serde(default = "default_max_object_bytes")]
    pub max_object_bytes: usize,
}

impl Default for MaskConfig {
    fn default() -> Self {
        Self {
            config_map_keys: Vec::new(),
            env_names: Vec::new(),
            annotations: Vec::new(),
            unmasked_subjects: Vec::new(),
            max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
        }
    }
}

fn default_max_object_bytes() -> usize {
    DEFAULT_MAX_OBJECT_BYTES
}
