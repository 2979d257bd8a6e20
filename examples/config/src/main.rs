//! `config`: settings from a ConfigMap and a Secret, as environment variables (fixed at
//! start) and as mounted files (followed live: an edit of the ConfigMap shows up here
//! within the node's volume sync period, without a restart).

use std::time::Duration;

use bosun_sdk::config::{self, Files};
use bosun_sdk::log::display;
use bosun_sdk::{error, info, shutdown};

fn main() {
    if let Err(e) = run() {
        error!("config failed", error = display(&e));
        std::process::exit(1);
    }
}

fn run() -> Result<(), config::Error> {
    let greeting: String = config::require("GREETING")?;
    let api_key: String = config::require("API_KEY")?;
    let settings_dir: String = config::env_or("SETTINGS_DIR", "/etc/app".to_string())?;
    let secret_dir: String = config::env_or("SECRET_DIR", "/etc/secret".to_string())?;
    // Never log a secret, only that it is there.
    info!(
        "started",
        greeting = greeting.as_str(),
        api_key_bytes = api_key.len()
    );

    let mut settings = Files::open(&settings_dir)?;
    let secret = Files::open(&secret_dir)?;
    report(&settings, &secret);
    while !shutdown::requested() {
        std::thread::sleep(Duration::from_secs(1));
        if settings.reload()? {
            report(&settings, &secret);
        }
    }
    info!("stopping");
    Ok(())
}

fn report(settings: &Files, secret: &Files) {
    let keys: Vec<&str> = settings.keys().collect();
    info!(
        "settings",
        color = settings.get("color").map(str::trim),
        size = settings.parse::<u32>("size").ok().flatten(),
        keys = keys.join(","),
        password_bytes = secret.bytes("password").map_or(0, <[u8]>::len)
    );
}
