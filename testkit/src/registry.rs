//! A real OCI registry (Debian's `docker-registry`) on a loopback port, its storage in a
//! temporary directory, stopped when dropped.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`
    pub host: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub async fn start() -> Self {
        Self::start_with(None, "127.0.0.1").await
    }

    /// A registry listening on `ip` (an address other network namespaces can reach).
    pub async fn start_on(ip: &str) -> Self {
        Self::start_with(None, ip).await
    }

    /// A registry that wants HTTP basic auth as `user`/`password` (htpasswd, bcrypt).
    pub async fn start_with_auth(user: &str, password: &str) -> Self {
        Self::start_with(Some((user, password)), "127.0.0.1").await
    }

    async fn start_with(login: Option<(&str, &str)>, ip: &str) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let port = crate::free_port();
        let config = dir.path().join("config.yml");
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {ip}:{port}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = login {
            let htpasswd = dir.path().join("htpasswd");
            let hash = bcrypt::hash(password, 4).unwrap();
            std::fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
            yaml.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: bosun-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        std::fs::write(&config, yaml).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            // It logs every 404 (a test's missing image) as an error.
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry is not installed: apt-get install docker-registry");
        let host = format!("{ip}:{port}");
        let url = format!("http://{host}/v2/");
        crate::eventually(
            "the registry starting",
            Duration::from_secs(30),
            Duration::from_millis(50),
            || async {
                // Up: 200, or 401 when it wants a login.
                let answer = reqwest::get(&url).await.ok()?;
                (answer.status().is_success() || answer.status() == 401).then_some(())
            },
        )
        .await;
        Self {
            child,
            host,
            _dir: dir,
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
