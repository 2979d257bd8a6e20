//! `bosun push` against a real registry: large modules go up in chunks and arrive intact,
//! credentials come from a docker config, and bad input gets a clear error.

use std::process::Command;

use crate::support::{BOSUN, Registry};
use base64::Engine as _;
use serde_json::Value;

/// Runs `bosun push ARGS`: (success, stdout, stderr).
fn push(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BOSUN).arg("push").args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A valid core module of about `size` bytes: the header and one custom section.
fn big_module(size: usize) -> Vec<u8> {
    let name = b"filler";
    let payload: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(&payload);
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    module.push(0);
    let mut len = section.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            module.push(byte);
            break;
        }
        module.push(byte | 0x80);
    }
    module.extend_from_slice(&section);
    wat::parse_bytes(&module).expect("a valid module");
    module
}

async fn manifest(registry: &Registry, repo: &str, tag: &str) -> Value {
    reqwest::Client::new()
        .get(format!(
            "http://{}/v2/{repo}/manifests/{tag}",
            registry.host
        ))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_large_module_goes_up_in_chunks_and_arrives_intact() {
    let registry = Registry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.wasm");
    let module = big_module(5 * 1024 * 1024 + 123);
    std::fs::write(&file, &module).unwrap();
    let image = format!("{}/big:v1", registry.host);
    let (ok, out, err) = push(&[file.to_str().unwrap(), &image, "--insecure"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.starts_with(&format!("pushed module {image} (")),
        "{out}"
    );

    let manifest = manifest(&registry, "big", "v1").await;
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    let layer = &manifest["layers"][0];
    assert_eq!(layer["mediaType"], "application/wasm");
    assert_eq!(layer["size"], module.len());
    let blob = reqwest::get(format!(
        "http://{}/v2/big/blobs/{}",
        registry.host,
        layer["digest"].as_str().unwrap()
    ))
    .await
    .unwrap()
    .bytes()
    .await
    .unwrap();
    assert!(blob[..] == module[..], "the pulled layer differs");
}

#[tokio::test]
async fn credentials_come_from_a_docker_config() {
    let registry = Registry::start_with_auth("pusher", "s3cret").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.wasm");
    std::fs::write(&file, wat::parse_str("(module)").unwrap()).unwrap();
    let image = format!("{}/private:v1", registry.host);
    let no_config = dir.path().join("none.json");

    // No credentials: the registry's refusal is reported, nothing is pushed.
    std::fs::write(&no_config, r#"{"auths":{}}"#).unwrap();
    let (ok, _, err) = push(&[
        file.to_str().unwrap(),
        &image,
        "--insecure",
        "--docker-config",
        no_config.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        err.to_lowercase().contains("unauthorized") || err.contains("401"),
        "{err}"
    );

    let config = dir.path().join("config.json");
    let auth = base64::engine::general_purpose::STANDARD.encode("pusher:s3cret");
    std::fs::write(
        &config,
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, registry.host),
    )
    .unwrap();
    let (ok, out, err) = push(&[
        file.to_str().unwrap(),
        &image,
        "--insecure",
        "--docker-config",
        config.to_str().unwrap(),
    ]);
    assert!(ok, "{out}{err}");
    assert!(out.starts_with("pushed module"), "{out}");
}

#[tokio::test]
async fn bad_input_is_refused_before_anything_is_sent() {
    let registry = Registry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("run.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    let image = format!("{}/bad:v1", registry.host);

    let (ok, _, err) = push(&[script.to_str().unwrap(), &image, "--insecure"]);
    assert!(!ok);
    assert!(err.contains("is not a WebAssembly binary"), "{err}");
    assert!(err.contains("magic"), "{err}");

    let missing = dir.path().join("missing.wasm");
    let (ok, _, err) = push(&[missing.to_str().unwrap(), &image, "--insecure"]);
    assert!(!ok);
    assert!(err.contains("cannot read"), "{err}");

    let module = dir.path().join("m.wasm");
    std::fs::write(&module, wat::parse_str("(module)").unwrap()).unwrap();
    let (ok, _, err) = push(&[module.to_str().unwrap(), "Not A Reference", "--insecure"]);
    assert!(!ok);
    assert!(err.contains("Not A Reference"), "{err}");

    let tags = reqwest::get(format!("http://{}/v2/bad/tags/list", registry.host))
        .await
        .unwrap();
    assert_eq!(tags.status(), 404, "something was pushed");
}
