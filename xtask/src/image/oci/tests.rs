use std::{collections::BTreeMap, io::Read as _};

use serde_json::Value;

use super::{Entry, Spec, archive, sha256};

fn spec(label: &str) -> Spec {
    Spec {
        name: "ghcr.io/kgate/kgate:0.1.0".into(),
        created: 1_700_000_000,
        architecture: "amd64".into(),
        entrypoint: vec!["/kgate".into()],
        cmd: vec!["agent".into()],
        env: vec!["PATH=/".into()],
        user: "0:0".into(),
        labels: BTreeMap::from([("org.opencontainers.image.version".into(), label.into())]),
    }
}

fn entries() -> Vec<Entry> {
    vec![
        Entry::file("/kgate", 0o755, b"\x7fELF binary".to_vec()),
        Entry::file("/lib/x86_64-linux-gnu/libc.so.6", 0o755, b"libc".to_vec()),
        Entry::file(
            "/etc/passwd",
            0o644,
            b"root:x:0:0::/:/nonexistent\n".to_vec(),
        ),
        Entry::dir("/tmp", 0o1777),
    ]
}

/// (path, mode, uid, mtime, contents) of every entry of a tar.
fn read_tar(bytes: &[u8]) -> Vec<(String, u32, u64, u64, Vec<u8>)> {
    let mut archive = tar::Archive::new(bytes);
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let header = entry.header().clone();
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            (
                entry.path().unwrap().display().to_string(),
                header.mode().unwrap(),
                header.uid().unwrap(),
                header.mtime().unwrap(),
                content,
            )
        })
        .collect()
}

fn file<'a>(outer: &'a [(String, u32, u64, u64, Vec<u8>)], path: &str) -> &'a [u8] {
    &outer
        .iter()
        .find(|e| e.0 == path)
        .unwrap_or_else(|| panic!("{path} missing"))
        .4
}

fn blob<'a>(outer: &'a [(String, u32, u64, u64, Vec<u8>)], digest: &str) -> &'a [u8] {
    file(outer, &format!("blobs/{}", digest.replacen(':', "/", 1)))
}

#[test]
fn the_same_inputs_give_the_same_bytes() {
    let a = archive(&entries(), &spec("0.1.0")).unwrap();
    let mut shuffled = entries();
    shuffled.reverse();
    let b = archive(&shuffled, &spec("0.1.0")).unwrap();
    assert_eq!(a.digest, b.digest);
    assert!(a.bytes == b.bytes, "the archives differ");
    let c = archive(&entries(), &spec("0.1.1")).unwrap();
    assert_ne!(a.digest, c.digest, "a label is part of the image");
}

#[test]
fn the_layer_is_sorted_with_parents_fixed_times_and_root_owner() {
    let built = archive(&entries(), &spec("0.1.0")).unwrap();
    let outer = read_tar(&built.bytes);
    let manifest: Value = serde_json::from_slice(blob(&outer, &built.digest)).unwrap();
    let layer_digest = manifest["layers"][0]["digest"].as_str().unwrap();
    let gz = blob(&outer, layer_digest);
    assert_eq!(sha256(gz), layer_digest);
    assert_eq!(built.layer_size, gz.len() as u64);
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut tar)
        .unwrap();
    let layer = read_tar(&tar);
    let paths: Vec<&str> = layer.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        paths,
        [
            "etc/",
            "etc/passwd",
            "kgate",
            "lib/",
            "lib/x86_64-linux-gnu/",
            "lib/x86_64-linux-gnu/libc.so.6",
            "tmp/",
        ]
    );
    for (path, mode, uid, mtime, _) in &layer {
        assert_eq!((*uid, *mtime), (0, 1_700_000_000), "{path}");
        let want = match path.as_str() {
            "tmp/" => 0o1777,
            "etc/passwd" => 0o644,
            _ => 0o755,
        };
        assert_eq!(*mode, want, "{path}");
    }
    // The config names the uncompressed layer, and how the image runs.
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    assert_eq!(config_digest, built.config_digest);
    let config: Value = serde_json::from_slice(blob(&outer, config_digest)).unwrap();
    assert_eq!(config["rootfs"]["diff_ids"][0], sha256(&tar));
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    assert_eq!(config["config"]["Entrypoint"][0], "/kgate");
    assert_eq!(
        config["config"]["Labels"]["org.opencontainers.image.version"],
        "0.1.0"
    );
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.version"],
        "0.1.0"
    );
}

#[test]
fn the_archive_is_an_oci_layout_and_a_docker_archive() {
    let built = archive(&entries(), &spec("0.1.0")).unwrap();
    let outer = read_tar(&built.bytes);
    assert_eq!(
        file(&outer, "oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#
    );
    let index: Value = serde_json::from_slice(file(&outer, "index.json")).unwrap();
    let entry = &index["manifests"][0];
    assert_eq!(entry["digest"], built.digest.as_str());
    assert_eq!(
        entry["annotations"]["io.containerd.image.name"],
        "ghcr.io/kgate/kgate:0.1.0"
    );
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        "0.1.0"
    );
    let manifest = blob(&outer, &built.digest);
    assert_eq!(sha256(manifest), built.digest);
    assert_eq!(entry["size"], manifest.len());
    // Every blob is stored under its own digest.
    for (path, _, _, _, content) in &outer {
        if let Some(hex) = path.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty()) {
            assert_eq!(sha256(content), format!("sha256:{hex}"), "{path}");
        }
    }
    let docker: Value = serde_json::from_slice(file(&outer, "manifest.json")).unwrap();
    assert_eq!(docker[0]["RepoTags"][0], "ghcr.io/kgate/kgate:0.1.0");
    let config_path = docker[0]["Config"].as_str().unwrap();
    assert_eq!(
        config_path,
        format!("blobs/{}", built.config_digest.replacen(':', "/", 1))
    );
}

#[test]
fn bad_inputs_are_refused() {
    let refused = |entries: Vec<Entry>, name: &str| {
        let mut spec = spec("0.1.0");
        spec.name = name.into();
        archive(&entries, &spec).err().map(|e| e.to_string())
    };
    let ok = "ghcr.io/kgate/kgate:0.1.0";
    for (entries, name, why) in [
        (vec![Entry::dir("tmp", 0o755)], ok, "absolute"),
        (vec![Entry::dir("/a/../etc", 0o755)], ok, "absolute"),
        (
            vec![Entry::dir("/tmp", 0o755), Entry::dir("/tmp", 0o700)],
            ok,
            "twice",
        ),
        (entries(), "ghcr.io/kgate/kgate", "no tag"),
        (entries(), "localhost:5000/kgate", "no tag"),
    ] {
        let error = refused(entries, name).unwrap_or_else(|| panic!("{why}: accepted"));
        assert!(error.contains(why), "{why}: {error}");
    }
}
