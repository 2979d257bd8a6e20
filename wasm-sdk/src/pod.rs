//! The pod a container runs in, as the downward API tells it.
//!
//! Kubernetes (and Bosun) pass a pod's identity to its containers through environment
//! variables the manifest maps with `valueFrom.fieldRef`. [`Pod::current`] reads the
//! conventional names; a manifest that wants them all says:
//!
//! ```yaml
//! env:
//! - name: POD_NAME
//!   valueFrom: {fieldRef: {fieldPath: metadata.name}}
//! - name: POD_NAMESPACE
//!   valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
//! - name: POD_UID
//!   valueFrom: {fieldRef: {fieldPath: metadata.uid}}
//! - name: POD_IP
//!   valueFrom: {fieldRef: {fieldPath: status.podIP}}
//! - name: NODE_NAME
//!   valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
//! - name: SERVICE_ACCOUNT
//!   valueFrom: {fieldRef: {fieldPath: spec.serviceAccountName}}
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;

/// What the container knows about its pod. A field is `None` when the manifest does not map
/// it (or maps it to an empty value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pod {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub uid: Option<String>,
    pub ip: Option<IpAddr>,
    pub node: Option<String>,
    pub service_account: Option<String>,
}

impl Pod {
    /// The pod of this container, from `POD_NAME`, `POD_NAMESPACE`, `POD_UID`, `POD_IP`,
    /// `NODE_NAME` and `SERVICE_ACCOUNT`.
    pub fn current() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The pod described by `lookup` (an environment: a variable's name → its value).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |name: &str| lookup(name).filter(|v| !v.is_empty());
        Self {
            name: get("POD_NAME"),
            namespace: get("POD_NAMESPACE"),
            uid: get("POD_UID"),
            ip: get("POD_IP").and_then(|ip| ip.parse().ok()),
            node: get("NODE_NAME"),
            service_account: get("SERVICE_ACCOUNT"),
        }
    }

    /// `namespace/name`, or what is known of it (`?` for a missing part).
    pub fn key(&self) -> String {
        format!(
            "{}/{}",
            self.namespace.as_deref().unwrap_or("?"),
            self.name.as_deref().unwrap_or("?")
        )
    }
}

/// The labels or annotations in a downward API volume's file (`fieldRef:
/// metadata.labels`): one `key="value"` per line, values quoted as Go quotes strings. The
/// node rewrites the file when they change, so reading it again gives the current ones.
///
/// ```no_run
/// let labels = bosun_sdk::pod::read_labels("/etc/podinfo/labels")?;
/// let track = labels.get("track").map(String::as_str).unwrap_or("stable");
/// # let _ = track;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn read_labels(path: impl AsRef<std::path::Path>) -> std::io::Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path)?;
    parse_labels(&text).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// `key="value"` lines → a map (see [`read_labels`]).
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (key, quoted) = line
            .split_once('=')
            .ok_or_else(|| format!("{line:?} is not key=\"value\""))?;
        let value = unquote(quoted.trim())
            .ok_or_else(|| format!("the value of {key} is not a quoted string: {quoted}"))?;
        out.insert(key.trim().to_string(), value);
    }
    Ok(out)
}

/// A double-quoted string with Go's or Rust's escapes (`\"`, `\\`, `\n`, `\t`, `\r`,
/// `\uXXXX`, `\u{X…}`, `\0`).
fn unquote(s: &str) -> Option<String> {
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'u' => {
                // Go writes \uXXXX, Rust (Bosun's node) \u{X…}.
                let rest = chars.as_str();
                let hex = if let Some(braced) = rest.strip_prefix('{') {
                    let end = braced.find('}')?;
                    let hex = &braced[..end];
                    chars = braced[end + 1..].chars();
                    hex
                } else {
                    let hex = rest.get(..4)?;
                    chars = rest[4..].chars();
                    hex
                };
                out.push(char::from_u32(u32::from_str_radix(hex, 16).ok()?)?);
            }
            '0' => out.push('\0'),
            other => out.push(other),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downward_api_label_files_parse() {
        let labels = parse_labels("app=\"web\"\ntier=\"a \\\"b\\\" \\u00e9\"\n\n").unwrap();
        assert_eq!(labels["app"], "web");
        assert_eq!(labels["tier"], "a \"b\" \u{e9}");
        let rust = parse_labels("x=\"bell\\u{7}\\0\"\n").unwrap();
        assert_eq!(rust["x"], "bell\u{7}\0");
        assert!(parse_labels("app=web").is_err());
        assert!(parse_labels("no equals").is_err());
    }

    #[test]
    fn reads_the_downward_api_names_and_skips_empty_or_bad_values() {
        let env = |name: &str| match name {
            "POD_NAME" => Some("web-1".to_string()),
            "POD_NAMESPACE" => Some("shop".to_string()),
            "POD_IP" => Some("10.88.0.7".to_string()),
            "NODE_NAME" => Some(String::new()),
            "POD_UID" => Some("not checked".to_string()),
            _ => None,
        };
        let pod = Pod::from_lookup(env);
        assert_eq!(pod.name.as_deref(), Some("web-1"));
        assert_eq!(pod.ip, Some("10.88.0.7".parse().unwrap()));
        assert_eq!(pod.node, None);
        assert_eq!(pod.service_account, None);
        assert_eq!(pod.key(), "shop/web-1");
        let bad_ip = Pod::from_lookup(|n| (n == "POD_IP").then(|| "x".to_string()));
        assert_eq!(bad_ip.ip, None);
        assert_eq!(bad_ip.key(), "?/?");
    }
}
