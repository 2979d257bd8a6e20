//! The `ip` command of iproute2, the one tool the node uses to change the network: network
//! namespaces, veth pairs, the bridge, addresses and routes. Each call is blocking (run it
//! off the async threads) and fails with the command and what `ip` said.

use std::io::Write;
use std::process::{Command, Stdio};

/// A failed `ip` command.
#[derive(Debug, Clone, thiserror::Error)]
#[error("`ip {command}` failed: {message}")]
pub struct IpError {
    pub command: String,
    pub message: String,
}

impl IpError {
    /// Whether `ip` said the object is already there.
    pub fn is_exists(&self) -> bool {
        self.message.contains("File exists")
    }
}

/// Runs `ip ARGS…` and returns its standard output.
pub fn ip(args: &[&str]) -> Result<String, IpError> {
    let command = args.join(" ");
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| IpError {
            command: command.clone(),
            message: format!("cannot run ip: {e}"),
        })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(IpError {
            command,
            message: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

/// Runs several `ip` commands in one process (`ip [-n NETNS] -batch -`); stops at the first
/// that fails.
pub fn batch(netns: Option<&str>, commands: &[String]) -> Result<(), IpError> {
    let mut args = Vec::new();
    if let Some(netns) = netns {
        args.extend(["-n", netns]);
    }
    args.extend(["-batch", "-"]);
    let shown = format!("{} <<< {}", args.join(" "), commands.join("; "));
    let error = |message: String| IpError {
        command: shown.clone(),
        message,
    };
    let mut child = Command::new("ip")
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| error(format!("cannot run ip: {e}")))?;
    let mut input = commands.join("\n");
    input.push('\n');
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input.as_bytes())
        .map_err(|e| error(format!("cannot write to ip: {e}")))?;
    let output = child
        .wait_with_output()
        .map_err(|e| error(format!("cannot wait for ip: {e}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(error(
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ))
    }
}
