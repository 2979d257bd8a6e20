//! `bosun push FILE.wasm REGISTRY/REPO:TAG`: a module or component as an OCI artifact in the
//! layout the node pulls (`application/vnd.wasm.config.v0+json` config, `application/wasm`
//! layer, as `wkg oci push` writes it).

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use bosun_node::images::{self, Credential, Layout};

#[derive(clap::Args)]
pub struct Args {
    /// The module or component (a `.wasm` binary).
    file: PathBuf,
    /// Where to push it: REGISTRY/REPOSITORY:TAG (for example localhost:5000/hello:v1).
    image: String,
    /// Talk plain HTTP to the registry (a local one without TLS).
    #[arg(long, env = "BOSUN_INSECURE")]
    insecure: bool,
    /// A docker-style config.json with the registry's credentials (`auths`). Default:
    /// $DOCKER_CONFIG/config.json, or ~/.docker/config.json, when it exists.
    #[arg(long, env = "BOSUN_DOCKER_CONFIG")]
    docker_config: Option<PathBuf>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let wasm = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let kind = wasm_kind(&wasm)
        .with_context(|| format!("{} is not a WebAssembly binary", args.file.display()))?;
    let credential = credential_for(&args.image, args.docker_config.as_deref())?;
    let size = wasm.len() as u64;
    let bar = ProgressBar::new(size, std::io::stderr().is_terminal());
    let progress = {
        let bar = bar.clone();
        Arc::new(move |sent| bar.show(sent))
    };
    let url = images::push_with_progress(
        &args.image,
        wasm,
        Layout::ConfigV0,
        args.insecure,
        credential.as_ref(),
        progress,
    )
    .await?;
    bar.finish();
    println!("pushed {kind} {} ({size} bytes) to {url}", args.image);
    Ok(())
}

/// "module" or "component", from the header; an error for anything else.
fn wasm_kind(bytes: &[u8]) -> anyhow::Result<&'static str> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        bail!("it does not start with the Wasm magic bytes \\0asm");
    }
    match bytes[4..8] {
        [1, 0, 0, 0] => Ok("module"),
        [_, _, 1, 0] => Ok("component"),
        _ => bail!("unknown Wasm version {:?}", &bytes[4..8]),
    }
}

/// The credential for the registry of `image` in the docker config, if any.
fn credential_for(image: &str, config: Option<&Path>) -> anyhow::Result<Option<Credential>> {
    let path = match config {
        Some(path) => path.to_path_buf(),
        None => {
            let dir = match std::env::var_os("DOCKER_CONFIG") {
                Some(dir) => PathBuf::from(dir),
                None => match std::env::var_os("HOME") {
                    Some(home) => PathBuf::from(home).join(".docker"),
                    None => return Ok(None),
                },
            };
            let path = dir.join("config.json");
            if !path.exists() {
                return Ok(None);
            }
            path
        }
    };
    let json = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let credentials =
        images::parse_docker_config(&json).with_context(|| format!("in {}", path.display()))?;
    let registry = image.split('/').next().unwrap_or_default();
    Ok(credentials.into_iter().find(|c| c.registry == registry))
}

/// A one-line progress bar on a terminal; silent otherwise.
#[derive(Clone)]
struct ProgressBar {
    total: u64,
    enabled: bool,
}

impl ProgressBar {
    fn new(total: u64, terminal: bool) -> Self {
        // Small files are up before a bar would be seen.
        Self {
            total,
            enabled: terminal && total >= 4 * 1024 * 1024,
        }
    }

    fn show(&self, sent: u64) {
        if !self.enabled {
            return;
        }
        let line = progress_line(sent, self.total, 30);
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{line}");
        let _ = err.flush();
    }

    fn finish(&self) {
        if self.enabled {
            eprintln!();
        }
    }
}

/// `[#####-----]  50%  2.0/4.0 MiB`
fn progress_line(sent: u64, total: u64, width: usize) -> String {
    let fraction = if total == 0 {
        1.0
    } else {
        sent.min(total) as f64 / total as f64
    };
    let filled = (fraction * width as f64).round() as usize;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    format!(
        "[{}{}] {:>3}%  {:.1}/{:.1} MiB",
        "#".repeat(filled),
        "-".repeat(width - filled),
        (fraction * 100.0).round() as u32,
        mib(sent),
        mib(total)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_and_components_are_told_apart_and_anything_else_refused() {
        assert_eq!(wasm_kind(b"\0asm\x01\0\0\0rest").unwrap(), "module");
        assert_eq!(wasm_kind(b"\0asm\x0d\0\x01\0").unwrap(), "component");
        assert!(
            wasm_kind(b"#!/bin/sh\n")
                .unwrap_err()
                .to_string()
                .contains("magic")
        );
        assert!(wasm_kind(b"\0asm").is_err());
    }

    #[test]
    fn the_bar_fills_with_the_bytes_sent() {
        assert_eq!(
            progress_line(2 << 20, 4 << 20, 10),
            "[#####-----]  50%  2.0/4.0 MiB"
        );
        assert_eq!(progress_line(9, 0, 4), "[####] 100%  0.0/0.0 MiB");
    }

    #[test]
    fn credentials_come_from_the_docker_config_for_the_registry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{"reg.example:5000":{"username":"u","password":"p"}}}"#,
        )
        .unwrap();
        let found = credential_for("reg.example:5000/app:v1", Some(&path)).unwrap();
        assert_eq!(found.map(|c| c.username), Some("u".to_string()));
        assert!(
            credential_for("other:5000/app:v1", Some(&path))
                .unwrap()
                .is_none()
        );
        std::fs::write(&path, "not json").unwrap();
        assert!(credential_for("reg.example:5000/app:v1", Some(&path)).is_err());
    }
}
