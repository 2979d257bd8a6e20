//! A container's environment and argv, as the kubelet builds them: `envFrom` (ConfigMaps and
//! Secrets, with prefixes), then `env` (values, ConfigMap and Secret keys, downward API fields
//! and resources), with `$(VAR)` references expanded.

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::objects::{ConfigError, Sources, configmap_data, field_value, secret_data};

/// Puts Kubernetes' service variables (the Services of the pod's namespace, as
/// [`crate::network::names::service_env`] writes them) before `env`, unless the pod turned
/// `enableServiceLinks` off; the `kubernetes` Service in `default` (`KUBERNETES_SERVICE_HOST`
/// and `KUBERNETES_SERVICE_PORT`, which clients' in-cluster configuration reads) is there in
/// every pod, as the kubelet has it. The container's own variables win.
pub(super) fn with_services(
    env: Vec<(String, String)>,
    directory: &crate::network::names::Directory,
    pod: &k8s_openapi::api::core::v1::Pod,
) -> Vec<(String, String)> {
    let links = pod.spec.as_ref().and_then(|s| s.enable_service_links) != Some(false);
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let wanted = |ns: &str, name: &str| {
        (links && ns == namespace) || (ns == "default" && name == KUBERNETES_SERVICE)
    };
    let mut all: Vec<(String, String)> = crate::network::names::service_env(directory, wanted)
        .into_iter()
        .filter(|(name, _)| !env.iter().any(|(n, _)| n == name))
        .collect();
    all.extend(env);
    all
}

/// The API server's Service, in `default`.
const KUBERNETES_SERVICE: &str = "kubernetes";

/// The container's environment. An error is the kubelet's CreateContainerConfigError message.
pub(super) async fn environment(
    sources: &mut Sources<'_>,
    container: &Container,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, name: String, value: String| match env
        .iter_mut()
        .find(|(n, _)| *n == name)
    {
        Some(slot) => slot.1 = value,
        None => env.push((name, value)),
    };
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(cm) = &from.config_map_ref {
            let optional = cm.optional.unwrap_or(false);
            match sources.configmap(&cm.name).await? {
                Some(found) => {
                    for (k, v) in configmap_data(found) {
                        set(&mut env, format!("{prefix}{k}"), lossy(v));
                    }
                }
                None if optional => {}
                None => {
                    return Err(ConfigError::NotFound {
                        kind: "configmap",
                        name: cm.name.clone(),
                    });
                }
            }
        }
        if let Some(sr) = &from.secret_ref {
            let optional = sr.optional.unwrap_or(false);
            match sources.secret(&sr.name).await? {
                Some(found) => {
                    for (k, v) in secret_data(found) {
                        set(&mut env, format!("{prefix}{k}"), lossy(v));
                    }
                }
                None if optional => {}
                None => {
                    return Err(ConfigError::NotFound {
                        kind: "secret",
                        name: sr.name.clone(),
                    });
                }
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = match &var.value_from {
            None => expand(var.value.as_deref().unwrap_or(""), &env),
            Some(from) => {
                if let Some(field) = &from.field_ref {
                    field_value(sources, &field.field_path)?
                } else if let Some(resource) = &from.resource_field_ref {
                    let name = resource
                        .container_name
                        .as_deref()
                        .unwrap_or(&container.name);
                    resource_value(
                        sources.pod,
                        name,
                        &resource.resource,
                        resource.divisor.as_ref(),
                    )?
                } else if let Some((kind, name, key, optional, data)) =
                    match (&from.config_map_key_ref, &from.secret_key_ref) {
                        (Some(k), _) => Some((
                            "ConfigMap",
                            &k.name,
                            &k.key,
                            k.optional,
                            sources.configmap(&k.name).await?.map(configmap_data),
                        )),
                        (None, Some(k)) => Some((
                            "Secret",
                            &k.name,
                            &k.key,
                            k.optional,
                            sources.secret(&k.name).await?.map(secret_data),
                        )),
                        (None, None) => None,
                    }
                {
                    match data.and_then(|d| d.into_iter().find(|(k, _)| k == key)) {
                        Some((_, v)) => lossy(v),
                        None if optional.unwrap_or(false) => continue,
                        None => {
                            return Err(ConfigError::NoEnvKey {
                                kind,
                                namespace: sources.namespace.to_string(),
                                name: name.clone(),
                                key: key.clone(),
                            });
                        }
                    }
                } else {
                    return Err(ConfigError::EmptyValueFrom(var.name.clone()));
                }
            }
        };
        set(&mut env, var.name.clone(), value);
    }
    Ok(env)
}

fn lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// A container's resource limit or request, divided by `divisor` and rounded up, as the
/// downward API presents it.
fn resource_value(
    pod: &Pod,
    container: &str,
    resource: &str,
    divisor: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
) -> Result<String, ConfigError> {
    let c = pod
        .spec
        .iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .find(|c| c.name == container)
        .ok_or_else(|| ConfigError::NoContainer(container.to_string()))?;
    let (kind, name) = resource
        .split_once('.')
        .ok_or_else(|| ConfigError::UnsupportedResource(resource.to_string()))?;
    let resources = c.resources.as_ref();
    let map = match kind {
        "limits" => resources.and_then(|r| r.limits.as_ref()),
        "requests" => resources.and_then(|r| r.requests.as_ref()),
        _ => return Err(ConfigError::UnsupportedResource(resource.to_string())),
    };
    let value = match map.and_then(|m| m.get(name)) {
        Some(q) => bosun_api::quantity::parse(&q.0).map_err(ConfigError::Quantity)?,
        // No limit: the node's allocatable, as Kubernetes reports; the agent has no better
        // figure here than zero for requests.
        None => 0.0,
    };
    let divisor = match divisor {
        Some(d) => bosun_api::quantity::parse(&d.0).map_err(ConfigError::Quantity)?,
        None => 1.0,
    };
    if divisor <= 0.0 {
        return Err(ConfigError::Divisor(resource.to_string()));
    }
    Ok(format!("{}", (value / divisor).ceil() as i64))
}

/// Expands `$(NAME)` from `env`; `$$` is a literal `$`; unknown references stay as written.
pub(super) fn expand(input: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match env.iter().rev().find(|(n, _)| n == name) {
                Some((_, v)) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// argv: `command` (else the container's name, standing in for the image's entrypoint) then
/// `args`, each expanded against the environment.
pub(super) fn argv(container: &Container, env: &[(String, String)]) -> Vec<String> {
    let mut argv: Vec<String> = match &container.command {
        Some(command) if !command.is_empty() => command.iter().map(|a| expand(a, env)).collect(),
        _ => vec![container.name.clone()],
    };
    argv.extend(container.args.iter().flatten().map(|a| expand(a, env)));
    argv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_expand_like_kubernetes() {
        let env = vec![
            ("A".to_string(), "1".to_string()),
            ("B".to_string(), "x y".to_string()),
        ];
        assert_eq!(expand("$(A)-$(B)", &env), "1-x y");
        assert_eq!(expand("$(MISSING)", &env), "$(MISSING)");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("cost $5 $(A", &env), "cost $5 $(A");
        assert_eq!(expand("", &env), "");
    }

    #[test]
    fn argv_defaults_to_the_container_name() {
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "hello", "args": ["--n", "$(N)"]
        }))
        .unwrap();
        let env = vec![("N".to_string(), "3".to_string())];
        assert_eq!(argv(&c, &env), ["hello", "--n", "3"]);
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "x", "command": ["run.wasm", "a"], "args": ["b"]
        }))
        .unwrap();
        assert_eq!(argv(&c, &env), ["run.wasm", "a", "b"]);
    }
}
