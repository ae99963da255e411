#!/usr/bin/env bash
# Release binaries of shopfloor-agent and shopfloor-gateway for other targets, from a Debian
# (bookworm) x86_64 box. Usage:
#
#   deploy/release/build.sh [TARGET...]        # default: the host target
#   PACKAGES="shopfloor-agent" deploy/release/build.sh aarch64-unknown-linux-gnu
#   JOBS=1 CARGO_TARGET_DIR=/tmp/release-target deploy/release/build.sh x86_64-unknown-linux-musl
#
# Per target it sets the linker and the C compiler that the C parts need (ring's assembly and
# C, SQLite bundled by libsqlite3-sys), runs `cargo build --release --locked`, and copies the
# binaries with a SHA256SUMS file to dist/<target>/. What each target needs (Debian packages
# and `rustup target add`) is in deploy/release/README.md; a missing tool is reported before
# anything is compiled.
set -euo pipefail
cd "$(dirname "$0")/../.."

PACKAGES="${PACKAGES:-shopfloor-agent shopfloor-gateway}"
JOBS="${JOBS:-}"
DIST="${DIST:-dist}"
host="$(rustc -vV | sed -n 's/^host: //p')"
[ "$#" -gt 0 ] || set -- "$host"

need() {
  command -v "$1" >/dev/null 2>&1 || {
    echo "error: $2: $1 not found (apt-get install $3)" >&2
    exit 2
  }
}

for target in "$@"; do
  if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    echo "error: $target: the Rust standard library for it is not installed (rustup target add $target)" >&2
    exit 2
  fi
  # Environment for this target only (a subshell per target).
  (
    up="$(echo "$target" | tr 'a-z-' 'A-Z_')"
    low="${target//-/_}"
    exe=""
    case "$target" in
      "$host") ;;
      x86_64-unknown-linux-musl)
        # rustc links musl targets self-contained (its own crt objects and libc.a); only the C
        # parts need a musl C compiler. The result is a static executable.
        need musl-gcc "$target" musl-tools
        export "CC_${low}=musl-gcc" "AR_${low}=ar"
        ;;
      aarch64-unknown-linux-gnu)
        need aarch64-linux-gnu-gcc "$target" "gcc-aarch64-linux-gnu libc6-dev-arm64-cross"
        export "CARGO_TARGET_${up}_LINKER=aarch64-linux-gnu-gcc"
        export "CC_${low}=aarch64-linux-gnu-gcc" "AR_${low}=aarch64-linux-gnu-ar"
        ;;
      aarch64-unknown-linux-musl)
        # musl for arm64 has no Debian cross compiler package; a musl.cc or zig toolchain works:
        need aarch64-linux-musl-gcc "$target" "(no Debian package: a musl cross toolchain)"
        export "CARGO_TARGET_${up}_LINKER=aarch64-linux-musl-gcc"
        export "CC_${low}=aarch64-linux-musl-gcc" "AR_${low}=aarch64-linux-musl-ar"
        ;;
      x86_64-pc-windows-gnu)
        need x86_64-w64-mingw32-gcc "$target" gcc-mingw-w64-x86-64
        export "CARGO_TARGET_${up}_LINKER=x86_64-w64-mingw32-gcc"
        export "CC_${low}=x86_64-w64-mingw32-gcc" "AR_${low}=x86_64-w64-mingw32-ar"
        exe=".exe"
        ;;
      *)
        echo "warning: $target: no cross settings known here; using cargo's defaults" >&2
        ;;
    esac

    args=(build --release --locked --target "$target")
    [ -z "$JOBS" ] || args+=(-j "$JOBS")
    for p in $PACKAGES; do args+=(-p "$p"); done
    echo "== $target: cargo ${args[*]}"
    cargo "${args[@]}"

    out_dir="${CARGO_TARGET_DIR:-target}/$target/release"
    dest="$DIST/$target"
    mkdir -p "$dest"
    names=()
    for p in $PACKAGES; do
      # Each package's binary has the package's name.
      install -m 0755 "$out_dir/$p$exe" "$dest/$p$exe"
      names+=("$p$exe")
    done
    (cd "$dest" && sha256sum "${names[@]}" >SHA256SUMS)
    echo "== $target: $dest"
    (cd "$dest" && ls -l "${names[@]}" && cat SHA256SUMS)
  )
done
