#!/usr/bin/env bash
# Build Meds and run it on this host, in the foreground, for development and demos.
#
#   sudo deploy/dev-run.sh            # release build
#   sudo deploy/dev-run.sh --debug    # debug build (faster to compile)
#
# * meds-controld runs as user `meds` if it exists, else as `nobody`, with its database in
#   /var/lib/meds and its sockets in /run/meds (override: MEDS_DEV_STATE_DIR, MEDS_DEV_RUN_DIR).
# * meds-dataplane runs as root and installs its NFQUEUE rules at the top of this host's INPUT
#   chains (iptables and ip6tables): whatever you blacklist is dropped for real.
# * REST credentials come from MEDS_USERNAME / MEDS_PASSWORD; when MEDS_PASSWORD is unset a
#   random one is generated and printed (there is no default password).
# * Ctrl-C (or SIGTERM) stops both: the dataplane first, which removes its rules.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$repo/deploy/common.sh"
cd "$repo"

profile=release
case "${1:-}" in
    "") ;;
    --debug) profile=debug ;;
    -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
    *) meds_die "unknown argument $1 (try --help)" ;;
esac

meds_require_root "$@"
# shellcheck disable=SC2086 # word splitting of the package lists is intended
meds_ensure_packages $MEDS_BUILD_PACKAGES $MEDS_RUN_PACKAGES
command -v setpriv >/dev/null || meds_die "setpriv (util-linux) is needed to drop privileges"
meds_find_cargo

target_dir=${CARGO_TARGET_DIR:-$repo/target}
trap 'meds_restore_ownership "$target_dir" "${CARGO_HOME:-}"' EXIT
if [ "$profile" = release ]; then
    "$CARGO" build --workspace --bins --locked --release
else
    "$CARGO" build --workspace --bins --locked
fi
bin="$target_dir/$profile"
meds_restore_ownership "$target_dir" "${CARGO_HOME:-}"

# The controller's account: the packaged `meds` user if present, else nobody.
if getent passwd meds >/dev/null; then
    user=meds
else
    user=nobody
fi
uid=$(id -u "$user")
gid=$(id -g "$user")

state_dir=${MEDS_DEV_STATE_DIR:-/var/lib/meds}
run_dir=${MEDS_DEV_RUN_DIR:-/run/meds}
dp_state_dir=${MEDS_DEV_DATAPLANE_STATE_DIR:-/var/lib/meds-dataplane}
install -d -m 0700 -o "$uid" -g "$gid" "$state_dir"
install -d -m 0751 -o "$uid" -g "$gid" "$run_dir"
install -d -m 0700 -o root -g root "$dp_state_dir"
api_addr=${MEDS_API_ADDR:-127.0.0.1:8000}

export MEDS_USERNAME=${MEDS_USERNAME:-admin}
generated=""
if [ -z "${MEDS_PASSWORD:-}" ]; then
    MEDS_PASSWORD=$(head -c 24 /dev/urandom | base64 | tr -d '/+=\n')
    generated=yes
fi
export MEDS_PASSWORD

admin_group_args=()
if getent group meds-admin >/dev/null; then
    admin_group_args=(--admin-socket-group meds-admin)
fi

ctl_pid=""
dp_pid=""
stop() {
    trap - INT TERM
    echo
    echo "==> stopping (the dataplane removes its rules)"
    if [ -n "$dp_pid" ] && kill -0 "$dp_pid" 2>/dev/null; then
        kill -TERM "$dp_pid"
        wait "$dp_pid" || true
    fi
    if [ -n "$ctl_pid" ] && kill -0 "$ctl_pid" 2>/dev/null; then
        kill -TERM "$ctl_pid"
        wait "$ctl_pid" || true
    fi
    meds_restore_ownership "$target_dir" "${CARGO_HOME:-}"
}
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM

echo "==> starting meds-controld as $user (state $state_dir, sockets $run_dir, API $api_addr)"
setpriv --reuid="$uid" --regid="$gid" --clear-groups --inh-caps=-all -- \
    "$bin/meds-controld" \
    --db-path "$state_dir/meds.db" \
    --sync-socket "$run_dir/sync.sock" \
    --admin-socket "$run_dir/admin.sock" \
    "${admin_group_args[@]}" \
    --api-addr "$api_addr" &
ctl_pid=$!

for _ in $(seq 100); do
    [ -S "$run_dir/admin.sock" ] && break
    kill -0 "$ctl_pid" 2>/dev/null || { wait "$ctl_pid" || true; meds_die "meds-controld exited"; }
    sleep 0.1
done
[ -S "$run_dir/admin.sock" ] || { stop; meds_die "meds-controld did not create $run_dir/admin.sock within 10 s"; }

echo "==> starting meds-dataplane as root (rules go into this host's INPUT chains)"
"$bin/meds-dataplane" \
    --sync-socket "$run_dir/sync.sock" \
    --state-file "$dp_state_dir/policy.pb" &
dp_pid=$!

host=${api_addr%:*}
port=${api_addr##*:}
cat <<MSG

Meds is running. In another terminal:
  $bin/medsctl --socket $run_dir/admin.sock status
  $bin/medsctl --socket $run_dir/admin.sock blacklist add 203.0.113.7
  $bin/medsctl --socket $run_dir/admin.sock blacklist list
  $bin/medsctl --socket $run_dir/admin.sock explain 203.0.113.7
  $bin/medsctl --socket $run_dir/admin.sock events --follow
  curl -u "\$MEDS_USERNAME:\$MEDS_PASSWORD" http://$host:$port/v1/blacklist/subnets
  curl -u "\$MEDS_USERNAME:\$MEDS_PASSWORD" -H 'Content-Type: application/json' \\
       -X POST -d '{"subnets":["198.51.100.0/24"]}' http://$host:$port/v1/blacklist/subnets
  curl -u "\$MEDS_USERNAME:\$MEDS_PASSWORD" http://$host:$port/metrics
API description: http://$host:$port/v1/docs (OpenAPI: /v1/openapi.json)
REST user: $MEDS_USERNAME
MSG
if [ -n "$generated" ]; then
    echo "REST password (generated for this run): $MEDS_PASSWORD"
fi
echo "Press Ctrl-C to stop both daemons."

# Whichever exits first ends the run; the other one is stopped.
status=0
wait -n "$ctl_pid" "$dp_pid" || status=$?
echo "==> a daemon exited (status $status)" >&2
stop
exit "$status"
