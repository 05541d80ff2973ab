#!/usr/bin/env bash
# Run every test of the workspace: unit, component, property and end-to-end tests.
#
#   sudo tests/run.sh [ARGS passed to the test binaries, e.g. --nocapture]
#
# Root is needed by the end-to-end tests (network namespaces, iptables, NFQUEUE). The script
# installs missing Debian packages (apt-get, non-interactive), builds the binaries the
# end-to-end tests run, and runs `cargo test --workspace`. MEDS_E2E_REQUIRE=1 is set, so an
# end-to-end test that cannot run fails instead of skipping. Exits non-zero on any failure.
#
# Honours CARGO_TARGET_DIR. Under sudo without cargo on root's PATH it uses the invoking user's
# toolchain and hands files it created in the target dir back to that user.
#
# The end-to-end tests of one test binary run in parallel (every bed has its own namespaces,
# directory and port); the latency test is its own binary, so it runs alone. Its figures are
# printed at the end and kept in $CARGO_TARGET_DIR/e2e-figures.txt.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=../deploy/common.sh
. "$repo/deploy/common.sh"
cd "$repo"

meds_require_root "$@"
# The domain and TLS end-to-end tests (tests/tests/{domains,tls,tshark}.rs) also need a TLS
# server and clients (openssl s_server/s_client, curl, gnutls-cli), tcpdump for captures and
# tshark as the reference dissector. tshark installs non-interactively: its debconf question
# (may non-root users capture?) keeps its default, no.
MEDS_E2E_PACKAGES="openssl curl gnutls-bin tcpdump tshark"
# shellcheck disable=SC2086 # word splitting of the package lists is intended
meds_ensure_packages $MEDS_BUILD_PACKAGES $MEDS_RUN_PACKAGES $MEDS_TEST_PACKAGES $MEDS_E2E_PACKAGES
meds_find_cargo

target_dir=${CARGO_TARGET_DIR:-$repo/target}
trap 'meds_restore_ownership "$target_dir" "${CARGO_HOME:-}"' EXIT

export MEDS_E2E_REQUIRE=1

start=$(meds_now)
"$CARGO" build --workspace --bins --locked
meds_elapsed "build (binaries for the end-to-end tests)" "$start"

start=$(meds_now)
test_log="$target_dir/test-output.txt"
mkdir -p "$target_dir"
# --all-targets: every unit, integration and example test; no doc tests (there are none).
set +e
"$CARGO" test --workspace --all-targets --locked --no-fail-fast -- "$@" 2>&1 | tee "$test_log"
status=${PIPESTATUS[0]}
set -e
meds_elapsed "cargo test --workspace" "$start"

if [ -f "$target_dir/e2e-figures.txt" ]; then
    echo "==> end-to-end figures ($target_dir/e2e-figures.txt):"
    cat "$target_dir/e2e-figures.txt"
fi
if [ "$status" -ne 0 ]; then
    echo "==> FAILED (cargo test exited $status); failed end-to-end tests printed their daemon logs and kept their directories" >&2
fi
passed=$(sed -n 's/^test result: [a-zA-Z]*\. \([0-9]*\) passed; \([0-9]*\) failed.*/\1/p' "$test_log" | awk '{s+=$1} END {print s+0}')
failed=$(sed -n 's/^test result: [a-zA-Z]*\. \([0-9]*\) passed; \([0-9]*\) failed.*/\2/p' "$test_log" | awk '{s+=$1} END {print s+0}')
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
    failed=1 # a test binary that failed to build or crashed reports no "test result" line
fi
summary="tests: $passed passed, $failed failed"
echo "$summary" > "$target_dir/test-summary.txt"
echo "$summary"
exit "$status"
