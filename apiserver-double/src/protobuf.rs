//! Request bodies in the Kubernetes protobuf encoding
//! (`application/vnd.kubernetes.protobuf`), decoded to the JSON the rest of the double
//! works with. kubectl's typed clients send this, not JSON: `kubectl create token`,
//! `create configmap|secret|namespace|serviceaccount|deployment`, `auth can-i` and
//! `auth whoami` all fail against a server that only reads JSON.
//!
//! The envelope is the `k8s\0` magic and a `runtime.Unknown` (typeMeta, raw); `raw` is
//! decoded with hand-written field tables from the kinds' `generated.proto`.
//!
//! Not here: fields outside the tables (skipped, so a body using them loses them;
//! the tables cover what kubectl's generators write), protobuf responses (the double
//! answers JSON, which every client that offers protobuf also accepts).

use base64::Engine as _;
use serde_json::{Map, Value, json};

/// How a field's bytes become JSON.
#[derive(Clone, Copy)]
enum T {
    Str,
    /// An integer that JSON omits when zero (a non-pointer `int32 ... omitempty`).
    Int,
    /// An integer that is present even when zero (a pointer such as `replicas`).
    OptInt,
    Bool,
    /// A boolean that is present even when false (a pointer such as `immutable`).
    OptBool,
    Msg(&'static str),
    MapStr,
    MapBytes,
    MapQuantity,
    MapExtra,
    Time,
    IntOrString,
}

/// (field number, JSON name, type, repeated).
type Field = (u64, &'static str, T, bool);

#[allow(clippy::too_many_lines)] // one table, read as one
fn fields(message: &str) -> &'static [Field] {
    use T::{
        Bool, Int, IntOrString, MapBytes, MapExtra, MapQuantity, MapStr, Msg, OptBool, OptInt, Str,
        Time,
    };
    match message {
        "ObjectMeta" => &[
            (1, "name", Str, false),
            (2, "generateName", Str, false),
            (3, "namespace", Str, false),
            (5, "uid", Str, false),
            (6, "resourceVersion", Str, false),
            (7, "generation", Int, false),
            (8, "creationTimestamp", Time, false),
            (9, "deletionTimestamp", Time, false),
            (10, "deletionGracePeriodSeconds", OptInt, false),
            (11, "labels", MapStr, false),
            (12, "annotations", MapStr, false),
            (13, "ownerReferences", Msg("OwnerReference"), true),
            (14, "finalizers", Str, true),
        ],
        "OwnerReference" => &[
            (1, "kind", Str, false),
            (3, "name", Str, false),
            (4, "uid", Str, false),
            (5, "apiVersion", Str, false),
            (6, "controller", OptBool, false),
            (7, "blockOwnerDeletion", OptBool, false),
        ],
        "ConfigMap" => &[
            (1, "metadata", Msg("ObjectMeta"), false),
            (2, "data", MapStr, false),
            (3, "binaryData", MapBytes, false),
            (4, "immutable", OptBool, false),
        ],
        "Secret" => &[
            (1, "metadata", Msg("ObjectMeta"), false),
            (2, "data", MapBytes, false),
            (3, "type", Str, false),
            (4, "stringData", MapStr, false),
            (5, "immutable", OptBool, false),
        ],
        "Namespace" => &[
            (1, "metadata", Msg("ObjectMeta"), false),
            (2, "spec", Msg("NamespaceSpec"), false),
        ],
        "NamespaceSpec" => &[(1, "finalizers", Str, true)],
        "ServiceAccount" => &[
            (1, "metadata", Msg("ObjectMeta"), false),
            (2, "secrets", Msg("ObjectReference"), true),
            (3, "imagePullSecrets", Msg("LocalObjectReference"), true),
            (4, "automountServiceAccountToken", OptBool, false),
        ],
        "ObjectReference" => &[
            (1, "kind", Str, false),
            (2, "namespace", Str, false),
            (3, "name", Str, false),
            (4, "uid", Str, false),
            (5, "apiVersion", Str, false),
        ],
        "LocalObjectReference" => &[(1, "name", Str, false)],
        "TokenRequest" => &[
            (1, "metadata", Msg("ObjectMeta"), false),
            (2, "spec", Msg("TokenRequestSpec"), false),
        ],
        "TokenRequestSpec" => &[
            (1, "audiences", Str, true),
            (3, "boundObjectRef", Msg("BoundObjectReference"), false),
            (4, "expirationSeconds", OptInt, false),
        ],
        "BoundObjectReference" => &[
            (1, "kind", Str, false),
            (2, "apiVersion", Str, false),
            (3, "name", Str, false),
            (4, "uid", Str, false),
        ],
        "TokenReview" => &[
            (1, "metadata", Msg("ObjectMeta"), false),
            (2, "spec", Msg("TokenReviewSpec"), false),
        ],
        "TokenReviewSpec" => &[(1, "token", Str, false), (2, "audiences", Str, true)],
        "SelfSubjectReview" => &[(1, "metadata", Msg("ObjectMeta"), false)],
        "SelfSubjectAccessReview" => &[
            (1, "metadata", Msg("ObjectMeta"), false),
            (2, "spec", Msg("SelfSubjectAccessReviewSpec"), false),
        ],
        "SelfSubjectAccessReviewSpec" => &[
            (1, "resourceAttributes", Msg("ResourceAttributes"), false),
            (
                2,
                "nonResourceAttributes",
                Msg("NonResourceAttributes"),
                false,
            ),
        ],
        "ResourceAttributes" => &[
            (1, "namespace", Str, false),
            (2, "verb", Str, false),
            (3, "group", Str, false),
            (4, "version", Str, false),
            (5, "resource", Str, false),
            (6, "subresource", Str, false),
            (7, "name", Str, false),
        ],
        "NonResourceAttributes" => &[(1, "path", Str, false), (2, "verb", Str, false)],
        "SelfSubjectRulesReview" => &[
            (1, "metadata", Msg("ObjectMeta"), false),
            (2, "spec", Msg("SelfSubjectRulesReviewSpec"), false),
        ],
        "SelfSubjectRulesReviewSpec" => &[(1, "namespace", Str, false)],
        "UserInfo" => &[
            (1, "username", Str, false),
            (2, "uid", Str, false),
            (3, "groups", Str, true),
            (4, "extra", MapExtra, false),
        ],
        "Deployment" => &[
            (1, "metadata", Msg("ObjectMeta"), false),
            (2, "spec", Msg("DeploymentSpec"), false),
            (3, "status", Msg("Empty"), false),
        ],
        "DeploymentSpec" => &[
            (1, "replicas", OptInt, false),
            (2, "selector", Msg("LabelSelector"), false),
            (3, "template", Msg("PodTemplateSpec"), false),
            (4, "strategy", Msg("DeploymentStrategy"), false),
            (5, "minReadySeconds", Int, false),
            (6, "revisionHistoryLimit", OptInt, false),
            (7, "paused", Bool, false),
            (9, "progressDeadlineSeconds", OptInt, false),
        ],
        "DeploymentStrategy" => &[
            (1, "type", Str, false),
            (2, "rollingUpdate", Msg("RollingUpdateDeployment"), false),
        ],
        "RollingUpdateDeployment" => &[
            (1, "maxUnavailable", IntOrString, false),
            (2, "maxSurge", IntOrString, false),
        ],
        "LabelSelector" => &[
            (1, "matchLabels", MapStr, false),
            (2, "matchExpressions", Msg("LabelSelectorRequirement"), true),
        ],
        "LabelSelectorRequirement" => &[
            (1, "key", Str, false),
            (2, "operator", Str, false),
            (3, "values", Str, true),
        ],
        "Pod" => &[
            (1, "metadata", Msg("ObjectMeta"), false),
            (2, "spec", Msg("PodSpec"), false),
            (3, "status", Msg("Empty"), false),
        ],
        "PodTemplateSpec" => &[
            (1, "metadata", Msg("ObjectMeta"), false),
            (2, "spec", Msg("PodSpec"), false),
        ],
        "PodSpec" => &[
            (2, "containers", Msg("Container"), true),
            (3, "restartPolicy", Str, false),
            (4, "terminationGracePeriodSeconds", OptInt, false),
            (6, "dnsPolicy", Str, false),
            (7, "nodeSelector", MapStr, false),
            (8, "serviceAccountName", Str, false),
            (9, "serviceAccount", Str, false),
            (10, "nodeName", Str, false),
            (11, "hostNetwork", Bool, false),
            (15, "imagePullSecrets", Msg("LocalObjectReference"), true),
            (16, "hostname", Str, false),
            (19, "schedulerName", Str, false),
            (20, "initContainers", Msg("Container"), true),
            (21, "automountServiceAccountToken", OptBool, false),
        ],
        "Container" => &[
            (1, "name", Str, false),
            (2, "image", Str, false),
            (3, "command", Str, true),
            (4, "args", Str, true),
            (5, "workingDir", Str, false),
            (6, "ports", Msg("ContainerPort"), true),
            (7, "env", Msg("EnvVar"), true),
            (8, "resources", Msg("ResourceRequirements"), false),
            (9, "volumeMounts", Msg("VolumeMount"), true),
            (13, "terminationMessagePath", Str, false),
            (14, "imagePullPolicy", Str, false),
            (16, "stdin", Bool, false),
            (17, "stdinOnce", Bool, false),
            (18, "tty", Bool, false),
            (20, "terminationMessagePolicy", Str, false),
        ],
        "ContainerPort" => &[
            (1, "name", Str, false),
            (2, "hostPort", Int, false),
            (3, "containerPort", OptInt, false),
            (4, "protocol", Str, false),
            (5, "hostIP", Str, false),
        ],
        "EnvVar" => &[(1, "name", Str, false), (2, "value", Str, false)],
        "ResourceRequirements" => &[
            (1, "limits", MapQuantity, false),
            (2, "requests", MapQuantity, false),
        ],
        "VolumeMount" => &[
            (1, "name", Str, false),
            (2, "readOnly", Bool, false),
            (3, "mountPath", Str, false),
            (4, "subPath", Str, false),
        ],
        "Scale" => &[
            (1, "metadata", Msg("ObjectMeta"), false),
            (2, "spec", Msg("ScaleSpec"), false),
        ],
        "ScaleSpec" => &[(1, "replicas", OptInt, false)],
        _ => &[],
    }
}

const MAGIC: &[u8] = b"k8s\0";

/// A protobuf-encoded object (envelope included) as its JSON form.
pub(crate) fn decode(body: &[u8]) -> Result<Value, String> {
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or("the body does not start with the k8s protobuf magic")?;
    let (mut type_meta, mut raw) = (Map::new(), None);
    for field in Reader(envelope) {
        match field? {
            (1, Wire::Len(b)) => {
                for tm in Reader(b) {
                    match tm? {
                        (1, Wire::Len(v)) => type_meta.insert("apiVersion".into(), text(v)?),
                        (2, Wire::Len(v)) => type_meta.insert("kind".into(), text(v)?),
                        _ => None,
                    };
                }
            }
            (2, Wire::Len(b)) => raw = Some(b),
            _ => {}
        }
    }
    let kind = type_meta
        .get("kind")
        .and_then(Value::as_str)
        .ok_or("the protobuf envelope names no kind")?
        .to_owned();
    if fields(&kind).is_empty() {
        return Err(format!("the double cannot decode {kind} from protobuf"));
    }
    let Value::Object(mut object) = message(&kind, raw.unwrap_or_default())? else {
        unreachable!("messages decode to objects");
    };
    object.insert("kind".into(), json!(kind));
    if let Some(v) = type_meta.remove("apiVersion") {
        object.insert("apiVersion".into(), v);
    }
    Ok(Value::Object(object))
}

fn message(name: &str, bytes: &[u8]) -> Result<Value, String> {
    let table = fields(name);
    let mut out = Map::new();
    for field in Reader(bytes) {
        let (number, wire) = field?;
        let Some(&(_, json_name, t, repeated)) = table.iter().find(|f| f.0 == number) else {
            continue; // a field the tables do not know
        };
        let Some(value) = scalar(t, wire)? else {
            continue;
        };
        match t {
            T::MapStr | T::MapBytes | T::MapQuantity | T::MapExtra => {
                let map = out.entry(json_name).or_insert_with(|| json!({}));
                if let (Value::Object(map), Value::Array(kv)) = (map, value) {
                    map.insert(kv[0].as_str().unwrap_or_default().to_owned(), kv[1].clone());
                }
            }
            _ if repeated => {
                if let Value::Array(list) = out.entry(json_name).or_insert_with(|| json!([])) {
                    list.push(value);
                }
            }
            _ => {
                out.insert(json_name.into(), value);
            }
        }
    }
    Ok(Value::Object(out))
}

/// One field's value; `None` for a value JSON would omit (empty, zero, false).
fn scalar(t: T, wire: Wire) -> Result<Option<Value>, String> {
    Ok(match (t, wire) {
        (T::Str, Wire::Len(b)) => Some(text(b)?).filter(|v| v != ""),
        // Varints carry int32 and int64 alike; negative values are two's complement.
        #[allow(clippy::cast_possible_wrap)]
        (T::Int, Wire::Varint(v)) => Some(json!(v as i64)).filter(|_| v != 0),
        #[allow(clippy::cast_possible_wrap)]
        (T::OptInt, Wire::Varint(v)) => Some(json!(v as i64)),
        (T::Bool, Wire::Varint(v)) => (v != 0).then_some(json!(true)),
        (T::OptBool, Wire::Varint(v)) => Some(json!(v != 0)),
        (T::Msg(name), Wire::Len(b)) => Some(message(name, b)?),
        (T::Time, Wire::Len(b)) => {
            let mut seconds = 0;
            for field in Reader(b) {
                if let (1, Wire::Varint(s)) = field? {
                    seconds = s;
                }
            }
            (seconds != 0).then(|| json!(super::store::rfc3339(seconds)))
        }
        (T::IntOrString, Wire::Len(b)) => {
            let (mut kind, mut int, mut string) = (0, 0, Value::Null);
            for field in Reader(b) {
                match field? {
                    (1, Wire::Varint(k)) => kind = k,
                    #[allow(clippy::cast_possible_wrap)]
                    (2, Wire::Varint(i)) => int = i as i64,
                    (3, Wire::Len(s)) => string = text(s)?,
                    _ => {}
                }
            }
            Some(if kind == 1 { string } else { json!(int) })
        }
        (T::MapStr | T::MapBytes | T::MapQuantity | T::MapExtra, Wire::Len(b)) => {
            let (mut key, mut value) = (Value::Null, Value::Null);
            for field in Reader(b) {
                match (t, field?) {
                    (_, (1, Wire::Len(k))) => key = text(k)?,
                    (T::MapStr, (2, Wire::Len(v))) => value = text(v)?,
                    (T::MapBytes, (2, Wire::Len(v))) => {
                        value = json!(base64::engine::general_purpose::STANDARD.encode(v));
                    }
                    // resource.Quantity is a message holding its string form.
                    (T::MapQuantity, (2, Wire::Len(v))) => {
                        for q in Reader(v) {
                            if let (1, Wire::Len(s)) = q? {
                                value = text(s)?;
                            }
                        }
                    }
                    (T::MapExtra, (2, Wire::Len(v))) => {
                        let mut items = Vec::new();
                        for item in Reader(v) {
                            if let (1, Wire::Len(s)) = item? {
                                items.push(text(s)?);
                            }
                        }
                        value = Value::Array(items);
                    }
                    _ => {}
                }
            }
            if value.is_null() {
                value = json!("");
            }
            Some(json!([key, value]))
        }
        _ => return Err("a protobuf field has the wrong wire type".into()),
    })
}

fn text(bytes: &[u8]) -> Result<Value, String> {
    std::str::from_utf8(bytes)
        .map(|s| json!(s))
        .map_err(|_| "a protobuf string is not UTF-8".to_owned())
}

// === wire format ===

enum Wire<'a> {
    Varint(u64),
    Len(&'a [u8]),
    Fixed,
}

/// The fields of one message, in order.
struct Reader<'a>(&'a [u8]);

impl<'a> Iterator for Reader<'a> {
    type Item = Result<(u64, Wire<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        Some(self.field())
    }
}

impl<'a> Reader<'a> {
    fn field(&mut self) -> Result<(u64, Wire<'a>), String> {
        let tag = self.varint()?;
        let wire = match tag & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => self.skip(8)?,
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| "length overflow")?;
                let (value, rest) = self
                    .0
                    .split_at_checked(len)
                    .ok_or("a protobuf field runs past the end")?;
                self.0 = rest;
                Wire::Len(value)
            }
            5 => self.skip(4)?,
            other => return Err(format!("unsupported protobuf wire type {other}")),
        };
        Ok((tag >> 3, wire))
    }

    fn skip(&mut self, n: usize) -> Result<Wire<'a>, String> {
        self.0 = self
            .0
            .get(n..)
            .ok_or("a protobuf field runs past the end")?;
        Ok(Wire::Fixed)
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for (i, byte) in self.0.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.0 = &self.0[i + 1..];
                return Ok(value);
            }
        }
        Err("a malformed protobuf varint".into())
    }
}

#[cfg(test)]
mod tests;
