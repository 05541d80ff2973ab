# shellcheck shell=bash
# Shell helpers shared by deploy/dev-run.sh, deploy/install.sh, tests/run.sh and .ci/run.
# Source it; it defines functions and package lists and changes nothing by itself.

# Debian 12 packages. Build: protoc for tonic-prost-build, a C toolchain for bundled SQLite and
# linking. Run: iptables/ip6tables and ip. Test: ping, ps/sysctl, systemd-analyze (package
# systemd on Debian 12), shellcheck for the scripts.
# shellcheck disable=SC2034 # used by the scripts that source this file
MEDS_BUILD_PACKAGES="protobuf-compiler gcc libc6-dev ca-certificates"
# shellcheck disable=SC2034
MEDS_RUN_PACKAGES="iptables iproute2"
# shellcheck disable=SC2034
MEDS_TEST_PACKAGES="iputils-ping procps systemd shellcheck"

meds_die() {
    echo "error: $*" >&2
    exit 1
}

meds_require_root() {
    [ "$(id -u)" -eq 0 ] || meds_die "run as root: sudo $0 $*"
}

# Install the named packages that are missing, non-interactively; no-op when all are present.
# Without dpkg (not Debian) it only warns: the tools are checked where they are used.
meds_ensure_packages() {
    if ! command -v dpkg-query >/dev/null 2>&1; then
        echo "warning: no dpkg; make sure these are installed: $*" >&2
        return 0
    fi
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || meds_die "missing packages: ${missing[*]} (re-run as root to install them)"
    echo "==> installing missing packages: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# Find cargo. Under sudo, PATH usually lacks the invoking user's ~/.cargo/bin: then use that
# user's toolchain (CARGO_HOME/RUSTUP_HOME) and remember the user, so files root creates in the
# user's target dir and cargo home can be handed back (meds_restore_ownership).
MEDS_OWNER=""
meds_find_cargo() {
    if command -v cargo >/dev/null 2>&1; then
        CARGO=$(command -v cargo)
    elif [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
        # A rustup install whose bin dir is not on this (non-login) shell's PATH.
        CARGO="${CARGO_HOME:-$HOME/.cargo}/bin/cargo"
        PATH="$(dirname "$CARGO"):$PATH"
        export PATH
    elif [ -n "${SUDO_USER:-}" ] && [ "${SUDO_USER}" != root ]; then
        local home
        home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
        [ -x "$home/.cargo/bin/cargo" ] || meds_die "cargo not found (not on PATH, not in ~$SUDO_USER/.cargo/bin)"
        CARGO="$home/.cargo/bin/cargo"
        export CARGO_HOME="${CARGO_HOME:-$home/.cargo}"
        export RUSTUP_HOME="${RUSTUP_HOME:-$home/.rustup}"
        export PATH="$home/.cargo/bin:$PATH"
    else
        meds_die "cargo not found: install the Rust toolchain (https://rustup.rs)"
    fi
    if [ -n "${SUDO_USER:-}" ] && [ "${SUDO_USER}" != root ]; then
        MEDS_OWNER="$SUDO_USER"
    fi
    export CARGO
}

# Give files that root created under the given directories back to the sudo user (cargo run as
# root must not leave root-owned files in a user's target dir or cargo home).
meds_restore_ownership() {
    [ -n "$MEDS_OWNER" ] || return 0
    local group dir
    group=$(id -gn "$MEDS_OWNER")
    for dir in "$@"; do
        [ -d "$dir" ] || continue
        # Only directories the user owns (never re-own a system-wide target dir).
        [ "$(stat -c %U "$dir")" = "$MEDS_OWNER" ] || continue
        find "$dir" -xdev -uid 0 -exec chown -h "$MEDS_OWNER:$group" {} + 2>/dev/null || true
    done
}

# Seconds since the epoch, with fractions, for phase timings.
meds_now() {
    date +%s.%N
}

# Print "PHASE: N.Ns" given a label and a start time from meds_now.
meds_elapsed() {
    awk -v s="$2" -v e="$(meds_now)" -v l="$1" 'BEGIN { printf "==> %s: %.1fs\n", l, e - s }'
}
