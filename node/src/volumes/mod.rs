//! Volumes → directories on the node, preopened in the guest at each `volumeMount`.
//!
//! - `emptyDir`: `<pod>/volumes/empty-dir/<name>`, shared by the pod's containers and removed
//!   with the pod;
//! - `hostPath`: the node's directory (`DirectoryOrCreate` creates it; WASI preopens
//!   directories only, so file, socket and device types are refused);
//! - `configMap`, `secret`, `downwardAPI` and `projected` (of those three and
//!   `serviceAccountToken`, the pod's bound token, renewed at 80% of its life): files written
//!   under `<pod>/volumes/<kind>/<name>` with `items` and `defaultMode`/`mode`, rewritten when
//!   the objects change (each file replaced atomically by a rename) and always read-only to
//!   the guest, as in Kubernetes.
//!
//! Anything else (PersistentVolumeClaims, NFS, ...) is refused with a message naming it.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, DownwardAPIVolumeFile, KeyToPath, Pod, Volume};

use crate::objects::{self, ConfigError, Sources};
use crate::runtime::Mount;

/// The mounts of `container`, preparing the volumes it uses. An error is the message of a
/// CreateContainerConfigError.
pub(crate) async fn mounts(
    sources: &mut Sources<'_>,
    pod_dir: &Path,
    pod: &Pod,
    container: &Container,
) -> Result<Vec<Mount>, ConfigError> {
    let volumes: Vec<Volume> = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    let mut out = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let volume = volumes
            .iter()
            .find(|v| v.name == mount.name)
            .ok_or_else(|| ConfigError::NoVolume(mount.name.clone()))?;
        let (dir, always_read_only) = prepare(sources, pod_dir, volume).await?;
        let host = match mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => {
                let sub = relative(sub).ok_or_else(|| ConfigError::SubPath(sub.to_string()))?;
                let path = dir.join(sub);
                if !path.exists() && !always_read_only {
                    std::fs::create_dir_all(&path)
                        .map_err(ConfigError::io("create subPath", &path))?;
                }
                path
            }
            None => dir,
        };
        if !host.is_dir() {
            return Err(ConfigError::NotADirectory {
                name: mount.name.clone(),
                path: mount.mount_path.clone(),
            });
        }
        out.push(Mount {
            host,
            guest: mount.mount_path.clone(),
            read_only: always_read_only || mount.read_only.unwrap_or(false),
        });
    }
    Ok(out)
}

/// Rewrites the files of the pod's configMap, secret, downwardAPI and projected volumes from
/// the objects' current contents (the containers see changes without a restart).
pub(crate) async fn refresh(
    sources: &mut Sources<'_>,
    pod_dir: &Path,
    pod: &Pod,
) -> Result<(), ConfigError> {
    let volumes: Vec<Volume> = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    for volume in &volumes {
        let files = volume.config_map.is_some()
            || volume.secret.is_some()
            || volume.downward_api.is_some()
            || volume.projected.is_some();
        if files
            && pod_dir
                .join("volumes")
                .join("files")
                .join(&volume.name)
                .exists()
        {
            prepare(sources, pod_dir, volume).await?;
        }
    }
    Ok(())
}

/// A path with no root, `..` or prefix.
fn relative(path: &str) -> Option<&Path> {
    let p = Path::new(path);
    p.components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        .then_some(p)
}

/// Makes the volume's directory ready; returns it and whether it is always read-only.
async fn prepare(
    sources: &mut Sources<'_>,
    pod_dir: &Path,
    volume: &Volume,
) -> Result<(PathBuf, bool), ConfigError> {
    let name = &volume.name;
    let dir = |kind: &str| pod_dir.join("volumes").join(kind).join(name);
    if volume.empty_dir.is_some() {
        let dir = dir("empty-dir");
        std::fs::create_dir_all(&dir).map_err(ConfigError::io("create the emptyDir", &dir))?;
        return Ok((dir, false));
    }
    if let Some(host) = &volume.host_path {
        let path = PathBuf::from(&host.path);
        match host.type_.as_deref().unwrap_or("") {
            "" => {}
            "DirectoryOrCreate" => std::fs::create_dir_all(&path)
                .map_err(ConfigError::io("create the hostPath", &path))?,
            "Directory" if path.is_dir() => {}
            "Directory" => return Err(ConfigError::HostPathNotDirectory(host.path.clone())),
            other => return Err(ConfigError::HostPathType(other.to_string())),
        }
        return Ok((path, false));
    }
    let mut files = Files::default();
    if let Some(cm) = &volume.config_map {
        files
            .config_map(
                sources,
                &cm.name,
                cm.items.as_deref(),
                cm.optional,
                cm.default_mode,
            )
            .await?;
    } else if let Some(secret) = &volume.secret {
        let secret_name = secret.secret_name.clone().unwrap_or_default();
        files
            .secret(
                sources,
                &secret_name,
                secret.items.as_deref(),
                secret.optional,
                secret.default_mode,
            )
            .await?;
    } else if let Some(downward) = &volume.downward_api {
        files.downward(
            sources,
            downward.items.as_deref().unwrap_or_default(),
            downward.default_mode,
        )?;
    } else if let Some(projected) = &volume.projected {
        for source in projected.sources.iter().flatten() {
            let mode = projected.default_mode;
            if let Some(cm) = &source.config_map {
                files
                    .config_map(sources, &cm.name, cm.items.as_deref(), cm.optional, mode)
                    .await?;
            } else if let Some(s) = &source.secret {
                files
                    .secret(sources, &s.name, s.items.as_deref(), s.optional, mode)
                    .await?;
            } else if let Some(d) = &source.downward_api {
                files.downward(sources, d.items.as_deref().unwrap_or_default(), mode)?;
            } else if let Some(t) = &source.service_account_token {
                let token = sources
                    .service_account_token(
                        t.audience.as_deref().filter(|a| !a.is_empty()),
                        t.expiration_seconds.unwrap_or(3600),
                    )
                    .await?;
                files.add(&t.path, token.into_bytes(), mode)?;
            } else {
                return Err(ConfigError::ProjectedSource(name.clone()));
            }
        }
    } else {
        let kind = serde_json::to_value(volume)
            .ok()
            .and_then(|v| {
                v.as_object()
                    .and_then(|o| o.keys().find(|k| *k != "name").cloned())
            })
            .unwrap_or_else(|| "unknown".to_string());
        return Err(ConfigError::VolumeType {
            name: name.clone(),
            kind,
        });
    }
    let dir = dir("files");
    files.write(&dir)?;
    Ok((dir, true))
}

/// The files of a configMap, secret, downwardAPI or projected volume.
#[derive(Default)]
struct Files {
    /// Relative path → (contents, mode).
    files: BTreeMap<PathBuf, (Vec<u8>, u32)>,
}

const DEFAULT_MODE: i32 = 0o644;

impl Files {
    fn add(&mut self, path: &str, bytes: Vec<u8>, mode: Option<i32>) -> Result<(), ConfigError> {
        let rel = relative(path).ok_or_else(|| ConfigError::ItemPath(path.to_string()))?;
        let mode = mode.unwrap_or(DEFAULT_MODE);
        if !(0..=0o777).contains(&mode) {
            return Err(ConfigError::Mode {
                mode,
                path: path.to_string(),
            });
        }
        self.files.insert(rel.to_path_buf(), (bytes, mode as u32));
        Ok(())
    }

    /// The files of the ConfigMap or Secret `name` (of `kind`) with its `data`.
    fn keyed(
        &mut self,
        (kind, name): (&'static str, &str),
        data: Vec<(String, Vec<u8>)>,
        items: Option<&[KeyToPath]>,
        default_mode: Option<i32>,
        optional: bool,
    ) -> Result<(), ConfigError> {
        match items {
            None => {
                for (key, value) in data {
                    self.add(&key, value, default_mode)?;
                }
            }
            Some(items) => {
                for item in items {
                    match data.iter().find(|(k, _)| *k == item.key) {
                        Some((_, value)) => {
                            self.add(&item.path, value.clone(), item.mode.or(default_mode))?
                        }
                        None if optional => {}
                        None => {
                            return Err(ConfigError::NoKey {
                                kind,
                                name: name.to_string(),
                                key: item.key.clone(),
                            });
                        }
                    }
                }
            }
        }
        Ok(())
    }

    async fn config_map(
        &mut self,
        sources: &mut Sources<'_>,
        name: &str,
        items: Option<&[KeyToPath]>,
        optional: Option<bool>,
        default_mode: Option<i32>,
    ) -> Result<(), ConfigError> {
        let data = sources.configmap(name).await?.map(objects::configmap_data);
        self.object("configmap", name, data, items, optional, default_mode)
    }

    async fn secret(
        &mut self,
        sources: &mut Sources<'_>,
        name: &str,
        items: Option<&[KeyToPath]>,
        optional: Option<bool>,
        default_mode: Option<i32>,
    ) -> Result<(), ConfigError> {
        let data = sources.secret(name).await?.map(objects::secret_data);
        self.object("secret", name, data, items, optional, default_mode)
    }

    /// The files of a ConfigMap or Secret (`kind`), `None` when it does not exist.
    fn object(
        &mut self,
        kind: &'static str,
        name: &str,
        data: Option<Vec<(String, Vec<u8>)>>,
        items: Option<&[KeyToPath]>,
        optional: Option<bool>,
        default_mode: Option<i32>,
    ) -> Result<(), ConfigError> {
        let optional = optional.unwrap_or(false);
        match data {
            Some(data) => self.keyed((kind, name), data, items, default_mode, optional),
            None if optional => Ok(()),
            None => Err(ConfigError::NotFound {
                kind,
                name: name.to_string(),
            }),
        }
    }

    fn downward(
        &mut self,
        sources: &Sources<'_>,
        items: &[DownwardAPIVolumeFile],
        default_mode: Option<i32>,
    ) -> Result<(), ConfigError> {
        for item in items {
            let value = match &item.field_ref {
                Some(field) => match field.field_path.as_str() {
                    // Whole maps, one key="value" per line, as the kubelet writes them.
                    "metadata.labels" => key_values(sources.pod.metadata.labels.as_ref()),
                    "metadata.annotations" => key_values(sources.pod.metadata.annotations.as_ref()),
                    path => objects::field_value(sources, path)?,
                },
                None => return Err(ConfigError::DownwardItem(item.path.clone())),
            };
            self.add(&item.path, value.into_bytes(), item.mode.or(default_mode))?;
        }
        Ok(())
    }

    /// Writes every file (temporary file, then rename) and removes files no longer listed.
    fn write(&self, dir: &Path) -> Result<(), ConfigError> {
        let fail = |path: &Path| ConfigError::io("write", path);
        std::fs::create_dir_all(dir).map_err(fail(dir))?;
        for (rel, (bytes, mode)) in &self.files {
            let path = dir.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(fail(parent))?;
            }
            let same = std::fs::read(&path).is_ok_and(|old| old == *bytes);
            if !same {
                let temp = path.with_file_name(format!(
                    ".{}.tmp",
                    path.file_name().unwrap_or_default().to_string_lossy()
                ));
                std::fs::write(&temp, bytes).map_err(fail(&temp))?;
                std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(*mode))
                    .map_err(fail(&temp))?;
                std::fs::rename(&temp, &path).map_err(fail(&path))?;
            } else {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))
                    .map_err(fail(&path))?;
            }
        }
        self.remove_stale(dir, dir);
        Ok(())
    }

    fn remove_stale(&self, root: &Path, dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            if path.is_dir() {
                if !self.files.keys().any(|f| f.starts_with(&rel)) {
                    let _ = std::fs::remove_dir_all(&path);
                } else {
                    self.remove_stale(root, &path);
                }
            } else if !self.files.contains_key(&rel) {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

fn key_values(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v:?}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_written_updated_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = Files::default();
        files.add("a", b"1".to_vec(), None).unwrap();
        files.add("sub/b", b"2".to_vec(), Some(0o600)).unwrap();
        files.write(dir.path()).unwrap();
        assert_eq!(std::fs::read(dir.path().join("sub/b")).unwrap(), b"2");
        let mode = std::fs::metadata(dir.path().join("sub/b"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let mut files = Files::default();
        files.add("a", b"changed".to_vec(), None).unwrap();
        files.write(dir.path()).unwrap();
        assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), b"changed");
        assert!(!dir.path().join("sub").exists(), "stale files go");

        let mut files = Files::default();
        assert!(files.add("../escape", vec![], None).is_err());
        assert!(files.add("/abs", vec![], None).is_err());
        assert!(files.add("x", vec![], Some(0o7777)).is_err());
    }

    #[test]
    fn sub_paths_stay_inside() {
        assert!(relative("a/b").is_some());
        assert!(relative("../a").is_none());
        assert!(relative("/a").is_none());
    }
}
