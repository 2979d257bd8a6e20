# Shared by the scripts in this directory (source it; it defines functions only).

# install_missing PACKAGE…: installs the Debian packages named (none: nothing to do), or, when
# not root, says which are missing and exits.
install_missing() {
    [ $# -gt 0 ] || return 0
    if [ "$(id -u)" != 0 ]; then
        echo "missing packages: $* (install them as root)" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# require_cargo: exits with a hint when there is no cargo.
require_cargo() {
    command -v cargo >/dev/null || { echo "cargo not found: install Rust with rustup" >&2; exit 1; }
}
