//! Writes an image archive from a list of files and an image config: one gzip layer,
//! its OCI config and manifest, the OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/…`) and, in the same tar, the `manifest.json` of Docker's archive
//! format, so that `docker load`, `podman load`, `ctr images import`, `kind load
//! image-archive` and `skopeo copy oci-archive:…` all accept it.
//!
//! Deterministic by construction: entries sorted by path, one fixed mtime (the
//! commit's), uid/gid 0 unless a file says otherwise, no user or group names, a gzip
//! header without name or time, JSON from structs (fixed field order) and `BTreeMap`s.
//! The same inputs give the same bytes, so the same digests.
//!
//! Not here: choosing the files (`super`), or talking to any engine or registry.

use std::{collections::BTreeMap, io::Write as _};

use anyhow::{Context, bail};
use flate2::{Compression, GzBuilder};
use serde::Serialize;

const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// One entry of the root file system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    /// Absolute path in the image (`/kgate`, `/etc/passwd`).
    pub path: String,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// `None` for a directory.
    pub content: Option<Vec<u8>>,
}

impl Entry {
    pub(super) fn file(path: &str, mode: u32, content: Vec<u8>) -> Self {
        Self {
            path: path.into(),
            mode,
            uid: 0,
            gid: 0,
            content: Some(content),
        }
    }

    pub(super) fn dir(path: &str, mode: u32) -> Self {
        Self {
            path: path.into(),
            mode,
            uid: 0,
            gid: 0,
            content: None,
        }
    }
}

/// What the image says about itself and how it runs.
#[derive(Clone, Debug)]
pub(super) struct Spec {
    /// `registry/repository:tag`, the name engines give the loaded image.
    pub name: String,
    /// Seconds since the epoch: every file's mtime and the `created` time.
    pub created: i64,
    /// `amd64`, `arm64`: the OCI name of the binary's architecture.
    pub architecture: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub user: String,
    /// Both the config's labels and the manifest's annotations.
    pub labels: BTreeMap<String, String>,
}

/// A written archive and what identifies it.
pub(super) struct Archive {
    pub bytes: Vec<u8>,
    /// The manifest's digest: the image digest a registry would show.
    pub digest: String,
    /// The config's digest: the image ID that docker and podman show.
    pub config_digest: String,
    /// The compressed layer's size in bytes.
    pub layer_size: u64,
}

// The OCI documents, with their fields in the order the specification lists them.

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: &'static str,
    digest: String,
    size: u64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct ImageConfig<'a> {
    created: String,
    architecture: &'a str,
    os: &'static str,
    config: RunConfig<'a>,
    rootfs: RootFs,
    history: Vec<History>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RunConfig<'a> {
    user: &'a str,
    env: &'a [String],
    entrypoint: &'a [String],
    cmd: &'a [String],
    working_dir: &'static str,
    labels: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

#[derive(Serialize)]
struct History {
    created: String,
    created_by: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u32,
    media_type: &'static str,
    config: Descriptor,
    layers: Vec<Descriptor>,
    annotations: BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<Descriptor>,
}

/// Docker's archive format: one entry per image.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    config: String,
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

/// Builds the archive.
pub(super) fn archive(entries: &[Entry], spec: &Spec) -> anyhow::Result<Archive> {
    let layer_tar = layer(entries, spec.created)?;
    let diff_id = sha256(&layer_tar);
    let mut gz = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::best());
    gz.write_all(&layer_tar)?;
    let layer_gz = gz.finish()?;
    let layer_digest = sha256(&layer_gz);

    let created = jiff::Timestamp::from_second(spec.created)
        .context("the creation time")?
        .to_string();
    let config = serde_json::to_vec(&ImageConfig {
        created: created.clone(),
        architecture: &spec.architecture,
        os: "linux",
        config: RunConfig {
            user: &spec.user,
            env: &spec.env,
            entrypoint: &spec.entrypoint,
            cmd: &spec.cmd,
            working_dir: "/",
            labels: &spec.labels,
        },
        rootfs: RootFs {
            kind: "layers",
            diff_ids: vec![diff_id],
        },
        history: vec![History {
            created,
            created_by: "cargo xtask image",
        }],
    })?;
    let config_digest = sha256(&config);
    let manifest = serde_json::to_vec(&Manifest {
        schema_version: 2,
        media_type: MEDIA_MANIFEST,
        config: descriptor(MEDIA_CONFIG, &config_digest, &config),
        layers: vec![descriptor(MEDIA_LAYER, &layer_digest, &layer_gz)],
        annotations: spec.labels.clone(),
    })?;
    let digest = sha256(&manifest);

    let Some((_, tag)) = spec
        .name
        .rsplit_once(':')
        .filter(|(repo, tag)| !repo.is_empty() && !tag.is_empty() && !tag.contains('/'))
    else {
        bail!("image name {:?} has no tag", spec.name);
    };
    let mut manifest_descriptor = descriptor(MEDIA_MANIFEST, &digest, &manifest);
    manifest_descriptor.annotations = BTreeMap::from([
        // containerd (ctr, kind) names the image from this; podman and skopeo from the
        // tag in the next, as `docker save` writes both.
        ("io.containerd.image.name".into(), spec.name.clone()),
        ("org.opencontainers.image.ref.name".into(), tag.into()),
    ]);
    let index = serde_json::to_vec(&Index {
        schema_version: 2,
        media_type: MEDIA_INDEX,
        manifests: vec![manifest_descriptor],
    })?;
    let docker = serde_json::to_vec(&[DockerManifest {
        config: blob_path(&config_digest),
        repo_tags: vec![spec.name.clone()],
        layers: vec![blob_path(&layer_digest)],
    }])?;

    // The outer tar: directories and files in sorted order, as the layer's.
    let mut outer = vec![
        Entry::dir("/blobs", 0o755),
        Entry::dir("/blobs/sha256", 0o755),
        Entry::file(
            "/oci-layout",
            0o644,
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        Entry::file("/index.json", 0o644, index),
        Entry::file("/manifest.json", 0o644, docker),
    ];
    for (digest, blob) in [
        (&layer_digest, layer_gz.clone()),
        (&config_digest, config),
        (&digest, manifest),
    ] {
        outer.push(Entry::file(&format!("/{}", blob_path(digest)), 0o644, blob));
    }
    Ok(Archive {
        bytes: tar(&outer, spec.created)?,
        digest,
        config_digest,
        layer_size: layer_gz.len() as u64,
    })
}

/// The layer: every entry, sorted, with its parent directories.
fn layer(entries: &[Entry], mtime: i64) -> anyhow::Result<Vec<u8>> {
    let mut seen = std::collections::BTreeSet::new();
    for entry in entries {
        if !entry.path.starts_with('/') || entry.path.split('/').any(|s| s == "..") {
            bail!(
                "{:?}: paths in the image are absolute, without `..`",
                entry.path
            );
        }
        if !seen.insert(entry.path.as_str()) {
            bail!("{:?} is in the image twice", entry.path);
        }
    }
    // A parent that no entry lists is a plain 0755 directory.
    let mut all = entries.to_vec();
    for entry in entries {
        let mut path = entry.path.as_str();
        while let Some((parent, _)) = path.rsplit_once('/') {
            if parent.is_empty() {
                break;
            }
            if !all.iter().any(|e| e.path == parent) {
                all.push(Entry::dir(parent, 0o755));
            }
            path = parent;
        }
    }
    tar(&all, mtime)
}

/// A ustar archive of `entries`, sorted by path (so a directory comes before what it
/// holds), every header's fields set explicitly.
fn tar(entries: &[Entry], mtime: i64) -> anyhow::Result<Vec<u8>> {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mtime = u64::try_from(mtime).context("a creation time before 1970")?;
    let mut builder = tar::Builder::new(Vec::new());
    for entry in sorted {
        let mut header = tar::Header::new_ustar();
        let mut path = entry.path.trim_start_matches('/').to_owned();
        match &entry.content {
            Some(content) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(content.len() as u64);
            }
            None => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                path.push('/');
            }
        }
        header.set_mode(entry.mode);
        header.set_uid(entry.uid);
        header.set_gid(entry.gid);
        header.set_mtime(mtime);
        header.set_path(&path)?;
        header.set_cksum();
        builder.append(&header, entry.content.as_deref().unwrap_or_default())?;
    }
    Ok(builder.into_inner()?)
}

fn descriptor(media_type: &'static str, digest: &str, blob: &[u8]) -> Descriptor {
    Descriptor {
        media_type,
        digest: digest.into(),
        size: blob.len() as u64,
        annotations: BTreeMap::new(),
    }
}

fn blob_path(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

pub(super) fn sha256(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
mod tests;
