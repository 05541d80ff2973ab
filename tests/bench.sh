#!/usr/bin/env bash
# The packet-rate bench: how many small UDP packets per second reach a socket through
#   kernel  no rules (the baseline);
#   floor   every packet through NFQUEUE to meds-nfq-floor, an accept-all loop on the
#           dataplane's own netlink layer (one receive + one verdict per packet): the floor of
#           any NFQUEUE firewall built this way;
#   meds    meds-dataplane with large lists loaded through meds-controld's REST API
#           (198.18.0.0/15 removed from the allowlist, so every packet walks the whole chain);
# under two workloads:
#   est     established flows: 8 source addresses x 4 connected UDP sockets (32 flows);
#   new     a new 5-tuple on every packet (raw socket; sources cycle over 198.18.0.0/15).
# Scenarios run interleaved inside every repetition (the order rotates per repetition); the
# table shows medians. Usage: sudo tests/bench.sh [-h] (see usage below).
#
# Everything runs in two network namespaces created here (firewall side and generator side,
# joined by one veth pair, 198.18.0.0/24) and deleted on exit, also on failure or Ctrl-C: the
# host's own interfaces and iptables rules are never touched (iptables rules in a namespace die
# with it). Every process is started here and stopped by its pid; each tool is also bounded in
# time by itself.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=../deploy/common.sh
. "$repo/deploy/common.sh"

usage() {
    cat <<EOF
usage: sudo $0 [options]
  -r N          repetitions (default 5)
  -t SECONDS    measured window per run (default 10, at most 50)
  -u SECONDS    warm-up before each window (default 2)
  -s LIST       scenarios, space separated, from: kernel floor meds (default all)
  -w LIST       workloads, space separated, from: est new (default both)
  -o DIR        results directory (default: a new /tmp/meds-bench.XXXXXX, kept)
  -p N          IPv4 prefixes on the blocklist for 'meds' (default 1000000; 90% /32, 10% /24)
  -d N          domains on the domain blocklist (default 100000)
  -j N          JA3 hashes on the JA3 blocklist (default 1000)
  -B            do not build; use the binaries already in \$CARGO_TARGET_DIR/release
  -h            this help
Env: GEN_CPU (default 0) runs the generator (its veth softirq runs there too); FW_CPU
(default 1) runs the firewall daemon and the receiver. CARGO_TARGET_DIR is honoured.
Output: DIR/raw.jsonl (one JSON line per run), DIR/summary.md, DIR/meta.txt, DIR/logs/.
EOF
}

reps=5 window=10 warmup=2 scenarios="kernel floor meds" workloads="est new" out=""
n_prefixes=1000000 n_domains=100000 n_ja3=1000 build=1
gen_cpu=${GEN_CPU:-0} fw_cpu=${FW_CPU:-1}
while getopts "r:t:u:s:w:o:p:d:j:Bh" opt; do
    case $opt in
        r) reps=$OPTARG ;;
        t) window=$OPTARG ;;
        u) warmup=$OPTARG ;;
        s) scenarios=$OPTARG ;;
        w) workloads=$OPTARG ;;
        o) out=$OPTARG ;;
        p) n_prefixes=$OPTARG ;;
        d) n_domains=$OPTARG ;;
        j) n_ja3=$OPTARG ;;
        B) build=0 ;;
        h) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -eq 0 ] || { usage >&2; exit 2; }

usage_error() { echo "error: $*" >&2; exit 2; }
# need_int FLAG VALUE MIN MAX: VALUE is a decimal integer in MIN..MAX, or a usage error.
need_int() {
    if ! [[ $2 =~ ^[0-9]{1,9}$ ]] || [ "$2" -lt "$3" ] || [ "$2" -gt "$4" ]; then
        usage_error "$1 must be an integer in $3..$4 (got '$2')"
    fi
}
need_int -r "$reps" 1 1000
need_int -t "$window" 1 50
need_int -u "$warmup" 0 8
need_int -p "$n_prefixes" 0 1000000
need_int -d "$n_domains" 0 1000000
need_int -j "$n_ja3" 0 100000
need_int GEN_CPU "$gen_cpu" 0 4095
need_int FW_CPU "$fw_cpu" 0 4095
if [ -z "$scenarios" ] || [ -z "$workloads" ]; then
    usage_error "no scenario or no workload"
fi
for s in $scenarios; do
    case $s in kernel | floor | meds) ;; *) usage_error "unknown scenario '$s'" ;; esac
done
for w in $workloads; do
    case $w in est | new) ;; *) usage_error "unknown workload '$w'" ;; esac
done

meds_require_root "$@"
for tool in ip iptables curl jq taskset awk ping; do
    command -v "$tool" >/dev/null 2>&1 || meds_die "'$tool' is required (Debian: iproute2 iptables curl jq util-linux gawk iputils-ping)"
done

# ---- names, addresses, state -------------------------------------------------------------------
ns_fw="meds-bench-fw-$$"
ns_gen="meds-bench-gen-$$"
veth_fw="mbf$$"
veth_gen="mbg$$"
fw_addr=198.18.0.1
port=9000
gen_addrs=(198.18.0.2 198.18.0.3 198.18.0.4 198.18.0.5 198.18.0.6 198.18.0.7 198.18.0.8 198.18.0.9)
api=127.0.0.1:18080 # inside the firewall namespace only
queue=0

if [ -z "$out" ]; then
    out=$(mktemp -d /tmp/meds-bench.XXXXXX)
fi
raw="$out/raw.jsonl"
[ ! -s "$raw" ] || meds_die "$raw exists: give a new results directory (-o)"
mkdir -p "$out/logs"
: >"$raw"
state=$(mktemp -d /tmp/meds-bench-state.XXXXXX)
target_dir=${CARGO_TARGET_DIR:-$repo/target}
pids=()
created_ns=()
restore_owner=0

# Stop one process we started: SIGTERM, then SIGKILL after 15 s; reap it.
stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

forget_pid() {
    local keep=() p
    for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    pids=("${keep[@]}")
}

cleanup() {
    local status=$? p
    set +e
    for p in "${pids[@]}"; do stop_pid "$p"; done
    # Deleting a namespace removes its veth end (and so the pair) and all its iptables rules.
    for p in "${created_ns[@]}"; do ip netns del "$p"; done
    rm -rf "$state"
    [ "$restore_owner" -eq 0 ] || meds_restore_ownership "$target_dir" "${CARGO_HOME:-}"
    if [ "$status" -ne 0 ]; then
        echo "bench failed (exit $status); logs in $out/logs" >&2
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# For foreground commands only. A process started in the background must be started with a
# plain `ip netns exec ... &` (ip, taskset and env all exec), so that $! is the process itself:
# the pid that is stopped and whose CPU time is measured.
in_fw() { ip netns exec "$ns_fw" "$@"; }
in_gen() { ip netns exec "$ns_gen" "$@"; }

# The process $1 must be the program $2 (the pid whose CPU time is measured).
expect_comm() {
    local comm
    comm=$(cat "/proc/$1/comm" 2>/dev/null) || meds_die "$2 (pid $1) is not running"
    [ "$comm" = "$2" ] || meds_die "pid $1 is '$comm', not $2"
}

# Poll `$@` every 0.2 s for at most $1 seconds.
wait_for() {
    local timeout=$1 what=$2 i
    shift 2
    for ((i = 0; i < timeout * 5; i++)); do
        "$@" 2>/dev/null && return 0
        sleep 0.2
    done
    meds_die "timed out after ${timeout}s waiting for: $what"
}

# ---- build -------------------------------------------------------------------------------------
if [ "$build" -eq 1 ]; then
    meds_find_cargo
    restore_owner=1
    echo "==> building release binaries"
    (cd "$repo" && "$CARGO" build --release --locked --bins \
        -p meds-dataplane -p meds-controld -p meds-e2e)
fi
bin="$target_dir/release"
for b in meds-pktgen meds-pktsink meds-nfq-floor meds-dataplane meds-controld; do
    [ -x "$bin/$b" ] || meds_die "$bin/$b is missing (build it, or drop -B)"
done

# ---- the bed -----------------------------------------------------------------------------------
echo "==> namespaces $ns_fw (firewall, $fw_addr) and $ns_gen (generator)"
for ns in "$ns_fw" "$ns_gen"; do
    ip netns add "$ns" || meds_die "cannot create namespace $ns"
    created_ns+=("$ns")
done
ip link add "$veth_fw" netns "$ns_fw" type veth peer name "$veth_gen" netns "$ns_gen"
in_fw ip link set lo up
in_gen ip link set lo up
in_fw ip addr add "$fw_addr/24" dev "$veth_fw"
for a in "${gen_addrs[@]}"; do in_gen ip addr add "$a/24" dev "$veth_gen"; done
in_fw ip link set "$veth_fw" up
in_gen ip link set "$veth_gen" up
# The new-flow workload's sources lie outside the /24: no reverse-path filter on the firewall.
in_fw sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
    "net.ipv4.conf.$veth_fw.rp_filter=0"
# Safety: the generator can reach nothing but the firewall's /24.
[ -z "$(in_gen ip route show default)" ] || meds_die "generator namespace has a default route"
[ -z "$(in_gen ip -6 route show default)" ] || meds_die "generator namespace has an IPv6 default route"
wait_for 10 "the firewall answers ARP" in_gen ping -c 1 -W 1 -q "$fw_addr" >/dev/null

{
    echo "date: $(date -u +%FT%TZ)"
    echo "kernel: $(uname -r)"
    echo "cpus: $(nproc)"
    echo "commit: $(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)"
    echo "reps=$reps window=${window}s warmup=${warmup}s scenarios=[$scenarios] workloads=[$workloads]"
    echo "gen_cpu=$gen_cpu fw_cpu=$fw_cpu prefixes=$n_prefixes domains=$n_domains ja3=$n_ja3"
} >"$out/meta.txt"

# ---- meds-controld and its lists (only for the 'meds' scenario) --------------------------------
api_user=bench
api_pass=$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')
curl_api() {
    local method=$1 path=$2
    shift 2
    in_fw curl -sS --fail-with-body --max-time 300 -u "$api_user:$api_pass" \
        -H 'content-type: application/json' -X "$method" "$@" "http://$api$path"
}

# Print a JSON body {"KEY":[ ... ]} of `count` generated values of `kind`, starting at `first`.
#   prefixes: 90% /32 in 11.0.0.0-42.255.255.255 and 10% /24 in 44.0.0.0-59.255.255.0, spread
#             by multiplying by an odd constant (a bijection modulo a power of two: no
#             duplicates); never 198.18.0.0/15, so no bench packet matches;
#   domains:  h<i>.z<i % 4999>.bench-<i % 97>.test (label structure like real block lists);
#   ja3:      32 hex digits.
gen_body() {
    local kind=$1 key=$2 first=$3 count=$4
    awk -v kind="$kind" -v key="$key" -v first="$first" -v count="$count" 'BEGIN {
        printf "{\"%s\":[", key
        for (i = first; i < first + count; i++) {
            if (i > first) printf ","
            if (kind == "prefixes") {
                if (i % 10 != 9) {
                    x = (i * 2654435761) % 536870912 + 184549376 # 11.0.0.0 + (mod 2^29)
                    printf "\"%d.%d.%d.%d/32\"", int(x / 16777216), int(x / 65536) % 256, int(x / 256) % 256, x % 256
                } else {
                    x = (i * 2654435761) % 1048576 # a /24 index (mod 2^20)
                    y = 44 * 65536 + x             # 44.0.0.0/24 onwards
                    printf "\"%d.%d.%d.0/24\"", int(y / 65536), int(y / 256) % 256, y % 256
                }
            } else if (kind == "domains") {
                printf "\"h%d.z%d.bench-%d.test\"", i, i % 4999, i % 97
            } else {
                x = (i * 2654435761) % 4294967296
                printf "\"%08x%08x%08x%08x\"", x, (x * 69069 + 1) % 4294967296, i, (i * 40503) % 4294967296
            }
        }
        printf "]}"
    }'
}

# POST `total` generated values to `path` in chunks of `chunk`.
load_list() {
    local kind=$1 key=$2 path=$3 total=$4 chunk=$5 first=0 n file t0
    t0=$(date +%s)
    while [ "$first" -lt "$total" ]; do
        n=$((total - first < chunk ? total - first : chunk))
        file="$state/body.json"
        gen_body "$kind" "$key" "$first" "$n" >"$file"
        curl_api POST "$path" --data-binary "@$file" >"$out/logs/load.$kind.$first.json"
        first=$((first + n))
    done
    echo "    $kind: $total on $path in $(($(date +%s) - t0)) s"
}

start_controller() {
    mkdir -p "$state/db" "$state/run" "$state/dataplane"
    chmod 0700 "$state/db" "$state/dataplane"
    ip netns exec "$ns_fw" env -i PATH="$PATH" MEDS_USERNAME="$api_user" MEDS_PASSWORD="$api_pass" \
        "$bin/meds-controld" --allow-root --db-path "$state/db/meds.db" --api-addr "$api" \
        --sync-socket "$state/run/sync.sock" --admin-socket "$state/run/admin.sock" \
        --disable-feed all --log-level warn --api-timeout 300 \
        >"$out/logs/controld.out" 2>"$out/logs/controld.err" &
    pids+=("$!")
    wait_for 30 "meds-controld's REST API" curl_api GET /v1/status -o /dev/null
}

in_sync() {
    local s
    s=$(curl_api GET /v1/status) || return 1
    jq -e '.dataplane_connected and .applied_generation == .generation' <<<"$s" >/dev/null
}

queue_bound() {
    # shellcheck disable=SC2016 # $1, $2 are awk fields
    in_fw awk -v q="$queue" '$1 == q && $2 != 0 { found = 1 } END { exit !found }' \
        /proc/net/netfilter/nfnetlink_queue
}

queue_unbound() { ! queue_bound; }

meds_hooked() { in_fw iptables -w -S INPUT | grep -q -- '-j MEDS'; }

start_dataplane() {
    ip netns exec "$ns_fw" taskset -c "$fw_cpu" env -i PATH="$PATH" "$bin/meds-dataplane" \
        --sync-socket "$state/run/sync.sock" --state-file "$state/dataplane/policy.pb" \
        --queue-num "$queue" --log-level warn \
        >>"$out/logs/dataplane.out" 2>>"$out/logs/dataplane.err" &
    pids+=("$!")
    daemon_pid=$!
    wait_for 300 "meds-dataplane enforces the loaded policy" in_sync
    wait_for 30 "meds-dataplane's rules" meds_hooked
    wait_for 30 "meds-dataplane's queue" queue_bound
    expect_comm "$daemon_pid" meds-dataplane
}

if [[ " $scenarios " == *" meds "* ]]; then
    echo "==> meds-controld (REST on $api inside $ns_fw) and the lists"
    start_controller
    # The fresh database's default allowlist covers 198.18.0.0/15, this bench's range: remove it
    # so every bench packet walks the whole chain instead of being accepted at step 1.
    curl_api DELETE /v1/whitelist/subnets --data-binary '{"subnets":["198.18.0.0/15"]}' >/dev/null
    allow_hit=$(curl_api GET "/v1/whitelist/subnets/$fw_addr" | jq -r .found)
    [ "$allow_hit" = false ] || meds_die "198.18.0.0/15 is still allowlisted"
    load_list prefixes subnets /v1/blacklist/subnets "$n_prefixes" 200000
    load_list domains domains /v1/blacklist/domains "$n_domains" 200000
    load_list ja3 ja3 /v1/blacklist/ja3 "$n_ja3" 200000
    curl_api GET /v1/status | jq -c '{generation, lists}' | tee "$out/logs/lists.json" | sed 's/^/    /'
    curl_api GET /v1/whitelist/subnets | jq -c . >"$out/logs/allowlist.json"
    echo "    allowlist now: $(cat "$out/logs/allowlist.json")"
    # A first start writes the state file and shows how long a cold start takes.
    t0=$(date +%s)
    start_dataplane
    echo "    meds-dataplane in sync after $(($(date +%s) - t0)) s (cold start with the lists)"
    stop_pid "$daemon_pid"
    forget_pid "$daemon_pid"
fi

# ---- scenarios ---------------------------------------------------------------------------------
daemon_pid=""

setup_scenario() {
    daemon_pid=""
    case $1 in
        kernel) ;;
        floor)
            ip netns exec "$ns_fw" taskset -c "$fw_cpu" "$bin/meds-nfq-floor" --queue-num "$queue" \
                --max-seconds $((window + warmup + 120)) \
                >>"$out/logs/floor.out" 2>>"$out/logs/floor.err" &
            pids+=("$!")
            daemon_pid=$!
            wait_for 10 "meds-nfq-floor's queue" queue_bound
            expect_comm "$daemon_pid" meds-nfq-floor
            # The same hook as meds-dataplane's: first INPUT rule, --queue-bypass.
            in_fw iptables -w -I INPUT 1 -j NFQUEUE --queue-num "$queue" --queue-bypass
            ;;
        meds) start_dataplane ;;
    esac
}

teardown_scenario() {
    case $1 in
        floor) in_fw iptables -w -D INPUT -j NFQUEUE --queue-num "$queue" --queue-bypass ;;
    esac
    if [ -n "$daemon_pid" ]; then
        stop_pid "$daemon_pid"
        forget_pid "$daemon_pid"
    fi
    # Nothing may be left for the next run (meds-dataplane removes its rules on exit).
    if in_fw iptables -w -S INPUT | grep -qv '^-P'; then
        meds_die "rules left in $ns_fw after '$1': $(in_fw iptables -w -S INPUT)"
    fi
    wait_for 10 "queue $queue unbound" queue_unbound
}

run_one() {
    local sc=$1 wl=$2 rep=$3 tag gen_pid gen_args=() sink_args=() sink gen
    tag="$wl.$sc.r$rep"
    case $wl in
        est)
            for a in "${gen_addrs[@]}"; do gen_args+=(--src "$a"); done
            gen_args+=(--flows-per-src 4)
            ;;
        new) gen_args+=(--new-flows --src-net 198.18.0.0/15) ;;
    esac
    setup_scenario "$sc"
    ip netns exec "$ns_gen" taskset -c "$gen_cpu" "$bin/meds-pktgen" --dst "$fw_addr:$port" \
        --seconds $((warmup + window + 2)) "${gen_args[@]}" \
        >"$out/logs/$tag.gen.json" 2>"$out/logs/$tag.gen.err" &
    gen_pid=$!
    pids+=("$gen_pid")
    sink_args=(--pid "gen=$gen_pid")
    [ -z "$daemon_pid" ] || sink_args+=(--pid "daemon=$daemon_pid")
    if ! in_fw taskset -c "$fw_cpu" "$bin/meds-pktsink" run --bind "$fw_addr:$port" \
        --warmup "$warmup" --window "$window" "${sink_args[@]}" \
        >"$out/logs/$tag.sink.json" 2>"$out/logs/$tag.sink.err"; then
        meds_die "meds-pktsink failed ($tag): $(cat "$out/logs/$tag.sink.err")"
    fi
    expect_comm "$gen_pid" meds-pktgen
    wait "$gen_pid" || meds_die "meds-pktgen failed ($tag): $(cat "$out/logs/$tag.gen.err")"
    forget_pid "$gen_pid"
    if [ "$sc" = meds ]; then
        curl_api GET /v1/status >"$out/logs/$tag.status.json" || true
    fi
    teardown_scenario "$sc"
    sink=$(cat "$out/logs/$tag.sink.json")
    gen=$(cat "$out/logs/$tag.gen.json")
    printf '{"scenario":"%s","workload":"%s","rep":%d,"sink":%s,"gen":%s}\n' \
        "$sc" "$wl" "$rep" "$sink" "$gen" >>"$raw"
    printf '    %-5s %-6s rep %d: %s delivered pps\n' "$wl" "$sc" "$rep" \
        "$(jq -r '.pps | floor' <<<"$sink")"
}

read -r -a scenario_list <<<"$scenarios"
n_sc=${#scenario_list[@]}
echo "==> $reps repetitions x [$workloads] x [$scenarios], ${window}s windows after ${warmup}s warm-up"
for ((rep = 1; rep <= reps; rep++)); do
    for wl in $workloads; do
        # Rotate the order every repetition so that no scenario always runs first or last.
        for ((k = 0; k < n_sc; k++)); do
            run_one "${scenario_list[$(((k + rep - 1) % n_sc))]}" "$wl" "$rep"
        done
    done
done

# ---- report ------------------------------------------------------------------------------------
{
    echo "## Packet-rate bench ($(date -u +%F), $(nproc) CPUs, kernel $(uname -r))"
    echo
    echo "$reps repetitions x ${window}s windows, scenarios interleaved; 60-byte frames (18-byte UDP payload)."
    if [[ " $scenarios " == *" meds "* ]]; then
        echo "meds: lists $(jq -c .lists "$out/logs/lists.json");"
        echo "198.18.0.0/15 (the bench range) removed from the allowlist, so every packet walks the whole chain."
    fi
    "$bin/meds-pktsink" report "$raw"
} >"$out/summary.md"
cat "$out/summary.md"
if [[ " $scenarios " == *" meds "* ]]; then
    last=$(find "$out/logs" -name '*.meds.*.status.json' | sort | tail -n 1)
    if [ -n "$last" ]; then
        echo
        echo "meds-dataplane decisions reported in its last run ($last):"
        jq -c '.dataplane_stats.decisions // "none reported"' "$last"
    fi
fi
echo
echo "raw data: $raw"
