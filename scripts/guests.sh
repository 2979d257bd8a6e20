#!/usr/bin/env bash
# Builds the guest workspace (guests/: the test guests, wasm-sdk/ and the Rust examples, compiled
# to wasm32-wasip2, `hello` to wasm32-wasip1), the C example, and wasm-sdk's unit tests as a
# wasm program, from a fresh machine, installing what it needs:
# - Debian's rustc-web with its std sources and LLVM tools, and lld-22 (rustup cannot download
#   wasm targets here), linked into rustup as the `debian-web` toolchain;
# - trixie's wasi-libc (bookworm's traps at the start of a wasip2 program with main()), fetched
#   as one .deb and unpacked under target/guest-toolchain, never installed;
# - clang-14 and bookworm's wasi-libc for the C example.
# The test guests end up in guests/target/wasm32-wasip2/release/*.wasm, the examples (and
# bosun-sdk-tests.wasm) in guests/target/examples/ (the tests read them there).
# Prints how long installing and building took. Usage: scripts/guests.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
root=$(pwd)
toolchain="$root/target/guest-toolchain"
start=$(date +%s)

need_apt=()
command -v /usr/bin/rustc >/dev/null && /usr/bin/rustc --version | grep -q '^rustc 1\.9[6-9]' || need_apt+=(rustc-web cargo-web)
[ -d /usr/lib/rustlib/src/rust/library ] || need_apt+=(rust-web-src)
[ -x /usr/lib/rustlib/x86_64-unknown-linux-gnu/bin/wasm-component-ld ] || need_apt+=(rust-web-llvm)
command -v ld.lld-22 >/dev/null || need_apt+=(lld-22)
command -v clang-14 >/dev/null || need_apt+=(clang-14)
[ -x /usr/lib/llvm-14/bin/wasm-ld ] || need_apt+=(lld-14)
ls /usr/lib/llvm-14/lib/clang/*/lib/wasi >/dev/null 2>&1 || need_apt+=(libclang-rt-14-dev-wasm32)
[ -f /usr/lib/wasm32-wasi/libc.a ] || need_apt+=(wasi-libc)
install_missing "${need_apt[@]}"

libc="$toolchain/wasi-libc/usr/lib/wasm32-wasip2"
if [ ! -f "$libc/libc.a" ]; then
    apt_dir="$toolchain/apt"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"
    # The same mirror as this machine's own Debian sources, with the trixie suite.
    codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
    mirror_of() { apt-get indextargets --format '$(SITE) $(RELEASE)' | awk -v c="$codename" '$2 == c { print $1; exit }'; }
    mirror=$(mirror_of)
    [ -n "$mirror" ] || { apt-get update -qq; mirror=$(mirror_of); }
    [ -n "$mirror" ] || { echo "no Debian mirror for $codename in the apt sources" >&2; exit 1; }
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main" \
        > "$apt_dir/sources.list"
    apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir" -o "Dir::Cache::Archives=$apt_dir/archives"
        -o APT::Sandbox::User=root)
    apt-get -qq "${apt_opts[@]}" update
    (cd "$apt_dir" && apt-get -qq "${apt_opts[@]}" download wasi-libc)
    rm -rf "$toolchain/wasi-libc"
    dpkg-deb -x "$apt_dir"/wasi-libc_*.deb "$toolchain/wasi-libc"
fi

grep -q '^debian-web' <<<"$(rustup toolchain list)" || rustup toolchain link debian-web /usr
installed=$(date +%s)
echo "guest toolchain ready in $((installed - start))s"

cd guests
out=target/examples
mkdir -p "$out"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS="-L native=$libc"
cargo build --release --locked
for example in web config sidecar; do
    cp "target/wasm32-wasip2/release/$example.wasm" "$out/"
done
for function in function_hello function_proxy; do
    cp "target/wasm32-wasip2/release/$function.wasm" "$out/${function/_/-}.wasm"
done
CARGO_TARGET_WASM32_WASIP1_RUSTFLAGS="-L native=$toolchain/wasi-libc/usr/lib/wasm32-wasip1" \
    cargo build --release --locked -p hello --target wasm32-wasip1
cp target/wasm32-wasip1/release/hello.wasm "$out/"
clang-14 --target=wasm32-wasi -O2 -Wl,--strip-all ../examples/c-hello/hello.c -o "$out/c-hello.wasm"

# wasm-sdk's unit tests, as one wasm program (libtest needs std's `test` crate, built here too,
# and pthread stubs; a failing test aborts the program). The tests run it on Bosun.
tests=$(CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS="-L native=$libc -C link-arg=-lwasi-emulated-pthread" \
    cargo test --release --locked -p bosun-sdk --no-run --message-format=json \
        -Z build-std=std,panic_abort,test -Z panic-abort-tests \
    | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "bosun_sdk":
        print(m["executable"])')
cp "$tests" "$out/bosun-sdk-tests.wasm"
echo "guests built in $(($(date +%s) - installed))s: $(ls target/wasm32-wasip2/release/*.wasm "$out"/*.wasm | xargs -n1 basename | tr '\n' ' ')"
