//! OCI image archives, written without a daemon: one tar holding `oci-layout`, `index.json`
//! and `blobs/sha256/` (the gzipped layer, the image config, the manifest), plus the
//! `manifest.json` that `docker load` reads. `podman load`, `docker load` and
//! `skopeo inspect oci-archive:` all read it. Every JSON document is written with its keys
//! sorted and every tar entry with fixed owner and time, so the same tree and settings give
//! the same archive.

use crate::progress::Progress;
use crate::tree::{Epoch, Node, Tree};
use anyhow::{Context, Result};
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, HistoryBuilder, ImageConfigurationBuilder, ImageIndexBuilder,
    ImageManifestBuilder, MediaType, OciLayoutBuilder, Os, RootFsBuilder, Sha256Digest,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, UNIX_EPOCH};

/// The annotation `podman load` names an image by.
const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The annotation containerd (and so `docker load`) names an image by: a full reference.
const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// What the image config says besides its layer.
pub struct Settings {
    pub entrypoint: Vec<String>,
    /// `NAME=VALUE`, in order.
    pub env: Vec<String>,
    pub user: Option<String>,
    /// `NAME:TAG`, the tag given or `latest`.
    pub reference: Option<String>,
    /// The times of the layer's entries; its `time` is the image's `created`.
    pub epoch: Epoch,
    /// What made the layer, for the image history.
    pub created_by: String,
}

/// The archive of a one-layer image holding `tree`.
pub fn archive(tree: &Tree, settings: &Settings) -> Result<Vec<u8>> {
    let layer = tree.write_tar(Vec::new(), settings.epoch, None)?;
    let diff_id = sha256(&layer);
    let layer = gzip(&layer)?;
    let layer_desc = descriptor(MediaType::ImageLayerGzip, &layer)?;
    let config = canonical(&config(settings, &diff_id)?)?;
    let config_desc = descriptor(MediaType::ImageConfig, &config)?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config_desc.clone())
        .layers(vec![layer_desc.clone()])
        .build()?;
    let manifest = canonical(&manifest)?;
    let mut manifest_desc = descriptor(MediaType::ImageManifest, &manifest)?;
    if let Some(reference) = &settings.reference {
        manifest_desc.set_annotations(Some(HashMap::from([
            (REF_NAME.to_string(), reference.clone()),
            (CONTAINERD_NAME.to_string(), full_reference(reference)),
        ])));
    }
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![manifest_desc])
        .build()?;
    let layout = OciLayoutBuilder::default()
        .image_layout_version("1.0.0")
        .build()?;
    let docker = docker_manifest(&config_desc, &layer_desc, settings.reference.as_deref());

    let mut out = Tree::new();
    for blob in [&layer, &config, &manifest] {
        out.add(
            &Path::new("/blobs").join(blob_path(blob)),
            file(blob.clone()),
        )?;
    }
    out.add(Path::new("/oci-layout"), file(canonical(&layout)?))?;
    out.add(Path::new("/index.json"), file(canonical(&index)?))?;
    out.add(Path::new("/manifest.json"), file(canonical(&docker)?))?;
    out.write_tar(Vec::new(), settings.epoch, None)
}

fn config(settings: &Settings, diff_id: &str) -> Result<oci_spec::image::ImageConfiguration> {
    let mut run = ConfigBuilder::default().entrypoint(settings.entrypoint.clone());
    if !settings.env.is_empty() {
        run = run.env(settings.env.clone());
    }
    if let Some(user) = &settings.user {
        run = run.user(user.clone());
    }
    let created =
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(settings.epoch.time))
            .to_string();
    let history = HistoryBuilder::default()
        .created(created.clone())
        .created_by(settings.created_by.clone())
        .build()?;
    let rootfs = RootFsBuilder::default()
        .typ("layers")
        .diff_ids(vec![format!("sha256:{diff_id}")])
        .build()?;
    Ok(ImageConfigurationBuilder::default()
        .created(created)
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .config(run.build()?)
        .rootfs(rootfs)
        .history(vec![history])
        .build()?)
}

/// The `manifest.json` of `docker save`: config, tags and layers by path in the archive.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    config: String,
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

fn docker_manifest(
    config: &Descriptor,
    layer: &Descriptor,
    reference: Option<&str>,
) -> [DockerManifest; 1] {
    let path = |d: &Descriptor| format!("blobs/sha256/{}", d.digest().digest());
    [DockerManifest {
        config: path(config),
        repo_tags: reference.map(String::from).into_iter().collect(),
        layers: vec![path(layer)],
    }]
}

/// `NAME:TAG` as a full reference: with a registry (`docker.io` when none is named) and,
/// for a name of one part on docker.io, `library/`.
fn full_reference(reference: &str) -> String {
    let first = reference.split('/').next().unwrap_or("");
    let has_registry = reference.contains('/')
        && (first.contains('.') || first.contains(':') || first == "localhost");
    match (has_registry, reference.contains('/')) {
        (true, _) => reference.to_string(),
        (false, true) => format!("docker.io/{reference}"),
        (false, false) => format!("docker.io/library/{reference}"),
    }
}

fn file(bytes: Vec<u8>) -> Node {
    Node::made(0o644, bytes)
}

fn sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

fn blob_path(blob: &[u8]) -> String {
    format!("sha256/{}", sha256(blob))
}

fn descriptor(media_type: MediaType, blob: &[u8]) -> Result<Descriptor> {
    let digest = Sha256Digest::from_str(&sha256(blob)).context("a sha256 digest")?;
    Ok(Descriptor::new(media_type, blob.len() as u64, digest))
}

/// JSON with every object's keys sorted (serde_json's own map is ordered): the same value
/// gives the same bytes, whatever order a hash map held it in.
fn canonical(value: &impl Serialize) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(&serde_json::to_value(value)?)?)
}

/// The layer gzipped at the highest level. The gzip header holds no time and no name.
fn gzip(raw: &[u8]) -> Result<Vec<u8>> {
    let progress = Progress::new(raw.len() as u64, "compressing the layer");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    for piece in raw.chunks(1 << 20) {
        gz.write_all(piece)?;
        progress.add(piece.len() as u64);
    }
    Ok(gz.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keys_come_out_sorted_whatever_the_map_order() {
        let a: HashMap<String, u8> = (0..32).map(|n| (format!("k{n}"), n)).collect();
        let b: HashMap<String, u8> = (0..32).rev().map(|n| (format!("k{n}"), n)).collect();
        assert_eq!(canonical(&a).unwrap(), canonical(&b).unwrap());
        assert!(canonical(&a)
            .unwrap()
            .starts_with(br#"{"k0":0,"k1":1,"k10":10"#));
    }

    #[test]
    fn references_get_a_registry() {
        assert_eq!(full_reference("jq:1"), "docker.io/library/jq:1");
        assert_eq!(full_reference("me/jq:1"), "docker.io/me/jq:1");
        assert_eq!(full_reference("localhost/jq:1"), "localhost/jq:1");
        assert_eq!(
            full_reference("reg.example:5000/jq:1"),
            "reg.example:5000/jq:1"
        );
    }
}
