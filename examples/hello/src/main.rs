//! `hello`: a Job's container that greets, says where it runs, and exits.

use bosun_sdk::{config, info, log::display, pod::Pod};

fn main() {
    let pod = Pod::current();
    let name: String = match config::env_or("GREETING_NAME", "world".to_string()) {
        Ok(name) => name,
        Err(e) => {
            bosun_sdk::error!("bad configuration", error = display(&e));
            std::process::exit(2);
        }
    };
    println!("Hello, {name}! This is WebAssembly, run by Bosun.");
    info!(
        "greeted",
        pod = pod.key(),
        node = pod.node,
        target = std::env::consts::ARCH
    );
}
