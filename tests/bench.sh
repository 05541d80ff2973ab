#!/usr/bin/env bash
# The packet-rate bench: how many small packets per second reach a socket through
#   kernel          no rules (the baseline);
#   ctmark          conntrack + CONNMARK fast path, no queue: the kernel path offload is measured
#                   against. In mangle INPUT (the hook meds-dataplane uses), on the veth:
#                   CONNMARK --restore-mark; -m mark --mark M/M -j ACCEPT; MARK --set-xmark M/M;
#                   -m mark --mark M/M -j CONNMARK --save-mark, with M = 0x100000 (the
#                   dataplane's trusted bit): every flow is "decided" on its first packet as if a
#                   daemon answered instantly, and later packets are accepted on the connmark;
#   floor           every packet through NFQUEUE to meds-nfq-floor, an accept-all loop on the
#                   dataplane's own netlink layer and queue I/O (recvmmsg batches, batch
#                   verdicts): the floor of any NFQUEUE firewall built this way;
#   meds            meds-dataplane with full-size lists loaded through meds-controld: the user
#                   blocklist (-p prefixes), domain (-d) and JA3 (-j) blocklists over REST, the
#                   IP->ASN table (-a IPv4 + -A IPv6 rows, iplocate CSV) as the controller's
#                   iplocate feed from a local file:// URL, one country and one ASN on the
#                   blocklists (so the origin stage looks every packet's source up), and
#                   198.18.0.0/15 removed from the allowlist (every packet walks the whole chain).
#                   Offload is on (the dataplane's default); --no-rate-limiter and
#                   --readers-count 1 are passed when this meds-dataplane has them;
#   meds-nooffload  (only with -s) the same with --no-offload: every packet is queued;
#   meds-single     (only with -s) the same with --no-offload --recv-batch 1: one receive and
#                   one verdict per packet, the per-packet-verdict design (the original's, and
#                   the nfq crate's), with the same lists: the baseline of the batching gain;
# under three workloads:
#   est   established UDP flows: 8 source addresses x 4 connected sockets (32 flows), flat out;
#   tcp   established TCP flows: 8 source addresses x 2 connections (16 flows), TCP_NODELAY,
#         18-byte writes; delivered = TCP segments the firewall's stack took in (Tcp InSegs).
#         A workload of its own, not mixed into 'est': a TCP sender is paced by its window and
#         ACK clock, so in one mix the UDP/TCP split of the packets would follow the generator's
#         scheduling and neither number would mean anything;
#   new   a new 5-tuple on every packet (raw socket; sources cycle over 198.18.0.0/15), the
#         shape of a spoofed flood: every packet is queued (and, with conntrack rules, creates
#         a conntrack entry).
# Scenarios run interleaved inside every repetition (the order rotates per repetition); tables
# show medians over all runs and over the quiet runs.
#
# Below saturation (-S, only for 'meds'): the generator sends at -R packets/s; 'steady' runs
# nothing else, 'swap' replaces the whole IP->ASN table (the served CSV flips between two
# versions whose every row differs, then POST /v1/feeds/update) and changes the 1M-prefix
# blocklist by one prefix (the dataplane rebuilds that whole set), 1 s into the window, and
# waits until the dataplane has applied both. Each reports queue_dropped, user_dropped, UDP
# receive-buffer drops and sent - received over the whole run.
#
# Quiet gate: before each run (daemon started and in sync) the bench waits, at most
# QUIET_MAX_WAIT seconds, until the whole machine is at most QUIET_MAX_BUSY % busy. A run is
# quiet when that succeeded and the background load measured in its window (machine busy time
# minus the bench's own processes and softirq threads) also stayed at most QUIET_MAX_BUSY %.
#
# Everything runs in two network namespaces created here (firewall side and generator side,
# joined by one veth pair, 198.18.0.0/24) and deleted on exit, also on failure or Ctrl-C: the
# host's own interfaces, iptables rules and conntrack table are never touched (rules and
# conntrack entries of a namespace die with it). Every process is started here and stopped by
# its pid; each tool is also bounded in time by itself. Usage: sudo tests/bench.sh -h
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
  -s LIST       scenarios, space separated, from: kernel ctmark floor meds meds-nooffload
                meds-single meds-single-offload
                (default: kernel ctmark floor meds)
  -w LIST       workloads, space separated, from: est tcp new (default all three)
  -S LIST       below-saturation runs of 'meds' (steady and with a list swap) for these
                workloads, from: est new; 'none' for none (default: est new)
  -R PPS        rate of the below-saturation runs (default 50000)
  -W SECONDS    window of the below-saturation runs (default 12, at most 50)
  -o DIR        results directory (default: a new /tmp/meds-bench.XXXXXX, kept)
  -p N          IPv4 prefixes on the blocklist (default 1000000; 90% /32, 10% /24)
  -d N          domains on the domain blocklist (default 100000)
  -j N          JA3 hashes on the JA3 blocklist (default 1000)
  -a N          IPv4 rows of the IP->ASN table (default 500000)
  -A N          IPv6 rows of the IP->ASN table (default 100000)
  -B            do not build; use the binaries already in \$CARGO_TARGET_DIR/release
  -h            this help
Env: GEN_CPU (default 0) runs the generator (its veth softirq runs there too); FW_CPU
(default 1) runs the firewall daemon and the receiver. QUIET_MAX_BUSY (default 25, % of all
CPUs) and QUIET_MAX_WAIT (default 20 s) set the quiet gate. CARGO_TARGET_DIR is honoured.
Output: DIR/raw.jsonl (one JSON line per run), DIR/summary.md, DIR/meta.txt, DIR/logs/.
EOF
}

reps=5 window=10 warmup=2 scenarios="kernel ctmark floor meds" workloads="est tcp new"
swap_workloads="est new" swap_rate=50000 swap_window=12 out=""
n_prefixes=1000000 n_domains=100000 n_ja3=1000 n_asn4=500000 n_asn6=100000 build=1
gen_cpu=${GEN_CPU:-0} fw_cpu=${FW_CPU:-1}
quiet_max=${QUIET_MAX_BUSY:-25} quiet_wait=${QUIET_MAX_WAIT:-20}
while getopts "r:t:u:s:w:S:R:W:o:p:d:j:a:A:Bh" opt; do
    case $opt in
        r) reps=$OPTARG ;;
        t) window=$OPTARG ;;
        u) warmup=$OPTARG ;;
        s) scenarios=$OPTARG ;;
        w) workloads=$OPTARG ;;
        S) swap_workloads=$OPTARG ;;
        R) swap_rate=$OPTARG ;;
        W) swap_window=$OPTARG ;;
        o) out=$OPTARG ;;
        p) n_prefixes=$OPTARG ;;
        d) n_domains=$OPTARG ;;
        j) n_ja3=$OPTARG ;;
        a) n_asn4=$OPTARG ;;
        A) n_asn6=$OPTARG ;;
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
need_int -R "$swap_rate" 1000 2000000
need_int -W "$swap_window" 5 50
need_int -p "$n_prefixes" 0 1000000
need_int -d "$n_domains" 0 1000000
need_int -j "$n_ja3" 0 100000
need_int -a "$n_asn4" 0 1000000
need_int -A "$n_asn6" 0 1000000
need_int GEN_CPU "$gen_cpu" 0 4095
need_int FW_CPU "$fw_cpu" 0 4095
need_int QUIET_MAX_BUSY "$quiet_max" 0 100
need_int QUIET_MAX_WAIT "$quiet_wait" 0 600
if [ -z "$scenarios" ] || [ -z "$workloads" ]; then
    usage_error "no scenario or no workload"
fi
for s in $scenarios; do
    case $s in kernel | ctmark | floor | meds | meds-nooffload | meds-single | meds-single-offload) ;; *) usage_error "unknown scenario '$s'" ;; esac
done
for w in $workloads; do
    case $w in est | tcp | new) ;; *) usage_error "unknown workload '$w'" ;; esac
done
[ "$swap_workloads" != none ] || swap_workloads=""
for w in $swap_workloads; do
    case $w in est | new) ;; *) usage_error "-S: unknown workload '$w' (est, new or none)" ;; esac
done
# The controller and the lists are needed by the meds scenarios and the below-saturation runs.
need_lists=0
[[ " $scenarios " != *" meds"* && -z $swap_workloads ]] ||
    need_lists=1

meds_require_root "$@"
for tool in ip iptables conntrack curl jq taskset awk ping; do
    command -v "$tool" >/dev/null 2>&1 ||
        meds_die "'$tool' is required (Debian: iproute2 iptables conntrack curl jq util-linux gawk iputils-ping)"
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
ct_mark=0x100000 # the ctmark scenario's bit: meds-dataplane's default trusted mark

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
controld_pid=""

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
    # Deleting a namespace removes its veth end (and so the pair), all its iptables rules and
    # its conntrack entries.
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

comm_is() { [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ]; }

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

now() { date +%s.%N; }
# Seconds from $1 to $2 (date +%s.%N values), 3 decimals.
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

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

# Flags of meds-dataplane that exist only in some versions: pass them when present.
dp_help=$("$bin/meds-dataplane" --help 2>&1) || meds_die "meds-dataplane --help failed"
dp_has() { grep -qE -- "(^|[[:space:],])$1([[:space:]=,]|\$)" <<<"$dp_help"; }
dp_flags=()
# The bench's few sources send far above any per-source limit: never rate limit them.
if dp_has --no-rate-limiter; then dp_flags+=(--no-rate-limiter); fi
# One packet thread, pinned with the process to FW_CPU (the other CPU generates the traffic).
if dp_has --readers-count; then dp_flags+=(--readers-count 1); fi
if [[ " $scenarios " == *" meds-nooffload "* || " $scenarios " == *" meds-single "* ]] &&
    ! dp_has --no-offload; then
    meds_die "scenarios meds-nooffload, meds-single: this meds-dataplane has no --no-offload"
fi
if [[ " $scenarios " == *" meds-single"* ]] && ! dp_has --recv-batch; then
    meds_die "scenarios meds-single*: this meds-dataplane has no --recv-batch"
fi
dp_offload_default=yes
dp_has --no-offload || dp_offload_default="no (no --no-offload flag: offload not implemented?)"

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
# TCP workload: one write, one segment (no corking of small writes while others are in
# flight); a per-namespace setting of the generator's side only.
in_gen sysctl -qw net.ipv4.tcp_autocorking=0 2>/dev/null || true
# Safety: the generator can reach nothing but the firewall's /24.
[ -z "$(in_gen ip route show default)" ] || meds_die "generator namespace has a default route"
[ -z "$(in_gen ip -6 route show default)" ] || meds_die "generator namespace has an IPv6 default route"
wait_for 10 "the firewall answers ARP" in_gen ping -c 1 -W 1 -q "$fw_addr" >/dev/null

{
    echo "date: $(date -u +%FT%TZ)"
    echo "kernel: $(uname -r)"
    echo "cpus: $(nproc)"
    echo "iptables: $(iptables --version)"
    echo "commit: $(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)"
    echo "tree: $(git -C "$repo" status --porcelain 2>/dev/null | wc -l) changed files"
    echo "reps=$reps window=${window}s warmup=${warmup}s scenarios=[$scenarios] workloads=[$workloads]"
    echo "below saturation: workloads=[$swap_workloads] rate=${swap_rate}pps window=${swap_window}s"
    echo "gen_cpu=$gen_cpu fw_cpu=$fw_cpu quiet gate: <= ${quiet_max}% busy, wait <= ${quiet_wait}s"
    echo "lists: prefixes=$n_prefixes domains=$n_domains ja3=$n_ja3 ipasn=${n_asn4}+${n_asn6}"
    echo "meds-dataplane: $("$bin/meds-dataplane" --version 2>&1 | head -n 1)"
    echo "meds-dataplane flags: ${dp_flags[*]:-none}; offload by default: $dp_offload_default"
    echo "conntrack max: $(cat /proc/sys/net/netfilter/nf_conntrack_max 2>/dev/null || echo '?')"
} >"$out/meta.txt"

# ---- meds-controld and its lists ---------------------------------------------------------------
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

# Print an IP->ASN table in the iplocate format (network,asn,country_code,name,org,domain):
# 198.18.0.0/15 (the bench's sources: found, country NL, never blocked), then n4 IPv4 /24s
# spread from 1.0.0.0 (every 7th /24, so below 108.0.0.0: never 127/8 or 198.18.0.0/15) and n6
# IPv6 /32s from 2400::/32, with ASNs 1..300000 and 16 countries. Versions a and b give every
# row a different ASN, so a switch between them replaces the whole table.
gen_ipasn() {
    local version=$1 n4=$2 n6=$3
    awk -v ver="$version" -v n4="$n4" -v n6="$n6" 'BEGIN {
        split("US DE FR NL GB JP BR IN CN RU CA AU SE IT ES PL", cc, " ")
        shift = (ver == "b") ? 104729 : 0
        print "network,asn,country_code,name,org,domain"
        printf "198.18.0.0/15,%d,NL,BENCH,\"Bench range, RFC 2544\",bench.test\n", 3333 + (ver == "b")
        for (i = 0; i < n4; i++) {
            j = 65536 + i * 7
            asn = 1 + (i * 7919 + shift) % 300000
            printf "%d.%d.%d.0/24,%d,%s,AS%d,\"Org %d, Inc.\",as%d.test\n", int(j / 65536), int(j / 256) % 256, j % 256, asn, cc[1 + i % 16], asn, asn, asn
        }
        for (i = 0; i < n6; i++) {
            asn = 1 + (i * 6007 + shift) % 300000
            printf "%x:%x::/32,%d,%s,AS%d,\"Org %d, Inc.\",as%d.test\n", 9216 + int(i / 65536), i % 65536, asn, cc[1 + i % 16], asn, asn, asn
        }
    }'
}

ipasn_served="$state/feeds/ip-to-asn.csv"
ipasn_version=a

# The iplocate feed's status as JSON.
ipasn_status() { curl_api GET /v1/feeds | jq -c '.feeds[] | select(.name == "iplocate")'; }
ipasn_done() {
    local s
    s=$(ipasn_status) || return 1
    jq -e '.last_success_unix > 0 or .last_error != ""' <<<"$s" >/dev/null
}

start_controller() {
    mkdir -p "$state/db" "$state/run" "$state/dataplane" "$state/feeds"
    chmod 0700 "$state/db" "$state/dataplane"
    # Every feed off: the lists come from this script (the IP->ASN table from a local file).
    ip netns exec "$ns_fw" env -i PATH="$PATH" MEDS_USERNAME="$api_user" MEDS_PASSWORD="$api_pass" \
        "$bin/meds-controld" --allow-root --db-path "$state/db/meds.db" --api-addr "$api" \
        --sync-socket "$state/run/sync.sock" --admin-socket "$state/run/admin.sock" \
        --disable-feed all --log-level warn --api-timeout 600 --update-timeout 10m \
        >"$out/logs/controld.out" 2>"$out/logs/controld.err" &
    controld_pid=$!
    pids+=("$controld_pid")
    wait_for 30 "meds-controld's REST API" curl_api GET /v1/status -o /dev/null
    expect_comm "$controld_pid" meds-controld
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

# meds-dataplane's jump from INPUT (table mangle in current versions, filter in earlier ones).
meds_hooked() {
    in_fw iptables -w -t mangle -S INPUT | grep -q -- '-j MEDS' ||
        in_fw iptables -w -S INPUT | grep -q -- '-j MEDS'
}

daemon_pid=""

start_dataplane() {
    local extra=("$@")
    ip netns exec "$ns_fw" taskset -c "$fw_cpu" env -i PATH="$PATH" "$bin/meds-dataplane" \
        --sync-socket "$state/run/sync.sock" --state-file "$state/dataplane/policy.pb" \
        --queue-num "$queue" --log-level warn "${dp_flags[@]}" "${extra[@]}" \
        >>"$out/logs/dataplane.out" 2>>"$out/logs/dataplane.err" &
    pids+=("$!")
    daemon_pid=$!
    wait_for 300 "meds-dataplane enforces the loaded policy" in_sync
    wait_for 30 "meds-dataplane's rules" meds_hooked
    wait_for 30 "meds-dataplane's queue" queue_bound
    expect_comm "$daemon_pid" meds-dataplane
}

if [ "$need_lists" -eq 1 ]; then
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
    # The IP->ASN table: both versions written once; version a served first.
    t0=$(date +%s)
    gen_ipasn a "$n_asn4" "$n_asn6" >"$state/feeds/ip-to-asn.a.csv"
    gen_ipasn b "$n_asn4" "$n_asn6" >"$state/feeds/ip-to-asn.b.csv"
    cp "$state/feeds/ip-to-asn.a.csv" "$ipasn_served"
    curl_api PATCH /v1/feeds/iplocate \
        --data-binary "{\"enabled\":true,\"url\":\"file://$ipasn_served\"}" >"$out/logs/load.ipasn.json"
    wait_for 600 "the iplocate feed is loaded" ipasn_done
    ipasn=$(ipasn_status)
    [ "$(jq -r .last_error <<<"$ipasn")" = "" ] ||
        meds_die "iplocate feed refused: $(jq -r .last_error <<<"$ipasn")"
    echo "    ipasn: $(jq -r .entries <<<"$ipasn") rows from $(du -h "$ipasn_served" | cut -f1)B of CSV in $(($(date +%s) - t0)) s"
    # One country and one ASN on the blocklists that no bench source has: the origin stage
    # (IP->ASN lookup, country and ASN checks) runs for every packet and never drops.
    curl_api POST /v1/blacklist/countries --data-binary '{"countries":["KP"]}' >/dev/null
    curl_api POST /v1/blacklist/asns --data-binary '{"asns":[394999]}' >/dev/null
    curl_api GET /v1/status | jq -c '{generation, lists}' | tee "$out/logs/lists.json" | sed 's/^/    /'
    curl_api GET /v1/whitelist/subnets | jq -c . >"$out/logs/allowlist.json"
    echo "    allowlist now: $(cat "$out/logs/allowlist.json")"
    # A first start writes the state file and shows how long a cold start takes.
    t0=$(date +%s)
    start_dataplane
    echo "    meds-dataplane in sync after $(($(date +%s) - t0)) s (cold start with the lists)"
    stop_pid "$daemon_pid"
    forget_pid "$daemon_pid"
    daemon_pid=""
fi

# ---- scenarios ---------------------------------------------------------------------------------
# The ctmark rule set (see the header); $1 = -A to add.
ctmark_rules() {
    local m=(-t mangle "$1" INPUT -i "$veth_fw")
    in_fw iptables -w "${m[@]}" -j CONNMARK --restore-mark --nfmask "$ct_mark" --ctmask "$ct_mark"
    in_fw iptables -w "${m[@]}" -m mark --mark "$ct_mark/$ct_mark" -j ACCEPT
    in_fw iptables -w "${m[@]}" -j MARK --set-xmark "$ct_mark/$ct_mark"
    in_fw iptables -w "${m[@]}" -m mark --mark "$ct_mark/$ct_mark" \
        -j CONNMARK --save-mark --nfmask "$ct_mark" --ctmask "$ct_mark"
}

setup_scenario() {
    daemon_pid=""
    case $1 in
        kernel) ;;
        ctmark) ctmark_rules -A ;;
        floor)
            ip netns exec "$ns_fw" taskset -c "$fw_cpu" "$bin/meds-nfq-floor" --queue-num "$queue" \
                --max-seconds $((swap_window + window + warmup + 180)) \
                >>"$out/logs/floor.out" 2>>"$out/logs/floor.err" &
            pids+=("$!")
            daemon_pid=$!
            wait_for 10 "meds-nfq-floor's queue" queue_bound
            expect_comm "$daemon_pid" meds-nfq-floor
            # The same hook as meds-dataplane's: first in mangle INPUT, --queue-bypass.
            in_fw iptables -w -t mangle -I INPUT 1 -j NFQUEUE --queue-num "$queue" --queue-bypass
            ;;
        meds) start_dataplane ;;
        meds-nooffload) start_dataplane --no-offload ;;
        meds-single) start_dataplane --no-offload --recv-batch 1 ;;
        meds-single-offload) start_dataplane --recv-batch 1 ;;
    esac
}

# True when table $1 of the firewall namespace holds nothing but built-in chain policies.
table_empty() { ! in_fw iptables -w -t "$1" -S | grep -qv '^-P'; }

teardown_scenario() {
    case $1 in
        ctmark | floor) in_fw iptables -w -t mangle -F INPUT ;;
    esac
    if [ -n "$daemon_pid" ]; then
        stop_pid "$daemon_pid"
        forget_pid "$daemon_pid"
        daemon_pid=""
    fi
    # Nothing may be left for the next run (meds-dataplane removes its rules on exit).
    local t
    for t in filter mangle; do
        table_empty "$t" || meds_die "rules left in $ns_fw/$t after '$1': $(in_fw iptables -w -t "$t" -S)"
    done
    wait_for 10 "queue $queue unbound" queue_unbound
}

# ---- the list swap -----------------------------------------------------------------------------
swaps=0
# Replace the whole IP->ASN table (flip the served file to the other version, update the feed),
# then change the 1M-prefix blocklist by one prefix (the dataplane rebuilds that whole set);
# wait until the dataplane applied both. Writes one JSON object to $1 (not run in a subshell:
# it keeps the served version and the swap count); bounded by curl's and the wait's limits.
list_swap() {
    local result=$1 t0 t1 t2 next g0 op status ok=true ipasn_s block_s feed i
    g0=$(curl_api GET /v1/status | jq .generation)
    t0=$(now)
    next=$([ "$ipasn_version" = a ] && echo b || echo a)
    cp "$state/feeds/ip-to-asn.$next.csv" "$ipasn_served.tmp"
    mv -f "$ipasn_served.tmp" "$ipasn_served"
    ipasn_version=$next
    curl_api POST /v1/feeds/update --data-binary '{"names":["iplocate"]}' \
        >"$out/logs/swap.$swaps.feed.json" || ok=false
    feed=$(jq -c '.feeds[0] // {}' "$out/logs/swap.$swaps.feed.json" 2>/dev/null || echo '{}')
    [ "$(jq -r '.last_error // "?"' <<<"$feed")" = "" ] || ok=false
    t1=$(now)
    op=$([ $((swaps % 2)) -eq 0 ] && echo POST || echo DELETE)
    curl_api "$op" /v1/blacklist/subnets --data-binary '{"subnets":["203.0.113.0/24"]}' \
        >"$out/logs/swap.$swaps.block.json" || ok=false
    status=1
    for ((i = 0; i < 600; i++)); do
        if in_sync; then status=0; break; fi
        sleep 0.2
    done
    [ "$status" -eq 0 ] || ok=false
    t2=$(now)
    ipasn_s=$(elapsed "$t0" "$t1")
    block_s=$(elapsed "$t1" "$t2")
    swaps=$((swaps + 1))
    jq -cn >"$result" --argjson ok "$ok" --argjson s "$(elapsed "$t0" "$t2")" --argjson ipasn_s "$ipasn_s" \
        --argjson block_s "$block_s" --argjson g0 "$g0" \
        --argjson g1 "$(curl_api GET /v1/status | jq .generation)" \
        --arg version "$next" --argjson feed "$feed" \
        '{ok: $ok, seconds: $s, ipasn_seconds: $ipasn_s, blocklist_seconds: $block_s,
          generation_before: $g0, generation_after: $g1, ipasn_version: $version,
          ipasn_entries: $feed.entries}'
}

# ---- one run -----------------------------------------------------------------------------------
# run_one SCENARIO WORKLOAD REP MODE: MODE sat (flat out), steady or swap (at -R pps).
run_one() {
    local sc=$1 wl=$2 rep=$3 mode=$4 tag gen_pid sink_pid gen_args=() sink_args=() gate
    local sink gen swap=null dataplane=null win=$window tail=0 secs ready line t_ready
    tag="$wl.$sc.$mode.r$rep"
    ready="$state/ready.$tag"
    case $wl in
        est)
            for a in "${gen_addrs[@]}"; do gen_args+=(--src "$a"); done
            gen_args+=(--flows-per-src 4)
            ;;
        tcp)
            for a in "${gen_addrs[@]}"; do gen_args+=(--src "$a"); done
            gen_args+=(--tcp --flows-per-src 2)
            sink_args+=(--tcp)
            ;;
        new) gen_args+=(--new-flows --src-net 198.18.0.0/15) ;;
    esac
    if [ "$mode" = sat ]; then
        # The generator outlives the window: the load is steady until the window closes.
        secs=$((warmup + window + 2))
    else
        # Paced: the generator stops with the window; the tail catches what is still queued.
        win=$swap_window
        tail=2
        secs=$((warmup + win))
        gen_args+=(--rate "$swap_rate" --batch 16)
    fi
    # A clean conntrack table: no marks or entries from the previous run.
    in_fw conntrack -F >/dev/null 2>&1 || true
    setup_scenario "$sc"
    gate=$("$bin/meds-pktsink" gate --max-busy "$quiet_max" --max-wait "$quiet_wait")
    ip netns exec "$ns_gen" taskset -c "$gen_cpu" "$bin/meds-pktgen" --dst "$fw_addr:$port" \
        --seconds "$secs" --wait-for "$ready" "${gen_args[@]}" \
        >"$out/logs/$tag.gen.json" 2>"$out/logs/$tag.gen.err" &
    gen_pid=$!
    pids+=("$gen_pid")
    # It waits for the ready file: alive, and soon exec'd into itself.
    wait_for 10 "meds-pktgen started ($tag)" comm_is "$gen_pid" meds-pktgen
    sink_args+=(--pid "gen=$gen_pid")
    [ -z "$daemon_pid" ] || sink_args+=(--pid "daemon=$daemon_pid")
    [ -z "$controld_pid" ] || sink_args+=(--pid "controld=$controld_pid")
    ip netns exec "$ns_fw" taskset -c "$fw_cpu" "$bin/meds-pktsink" run --bind "$fw_addr:$port" \
        --warmup "$warmup" --window "$win" --tail "$tail" --ready-file "$ready" "${sink_args[@]}" \
        >"$out/logs/$tag.sink.json" 2>"$out/logs/$tag.sink.err" &
    sink_pid=$!
    pids+=("$sink_pid")
    if [ "$mode" = swap ]; then
        # 1 s into the window (the generator starts once the sink is ready).
        wait_for 10 "meds-pktsink ready ($tag)" test -e "$ready"
        t_ready=$(now)
        sleep $((warmup + 1))
        list_swap "$state/swap.json"
        # Did the swap end inside the window (while the load was on)?
        swap=$(jq -c --argjson ended "$(elapsed "$t_ready" "$(now)")" --argjson limit "$((warmup + win))" \
            '. + {ended_s: $ended, in_window: ($ended <= $limit)}' "$state/swap.json")
    fi
    if ! wait "$sink_pid"; then
        meds_die "meds-pktsink failed ($tag): $(cat "$out/logs/$tag.sink.err")"
    fi
    forget_pid "$sink_pid"
    # The rule set and conntrack table as the run left them (the daemon still runs).
    { in_fw iptables -w -t mangle -S; in_fw iptables -w -S; in_fw conntrack -C; } \
        >"$out/logs/$tag.rules.txt" 2>&1 || true
    wait "$gen_pid" || meds_die "meds-pktgen failed ($tag): $(cat "$out/logs/$tag.gen.err")"
    forget_pid "$gen_pid"
    if [[ $sc == meds* ]]; then
        # Its decision counters, as last reported to the controller.
        if curl_api GET /v1/status >"$out/logs/$tag.status.json"; then
            dataplane=$(jq -c '{decisions: (.dataplane_stats.decisions // null)}' \
                "$out/logs/$tag.status.json")
        fi
    fi
    teardown_scenario "$sc"
    sink=$(cat "$out/logs/$tag.sink.json")
    gen=$(cat "$out/logs/$tag.gen.json")
    line=$(jq -cn --arg sc "$sc" --arg wl "$wl" --argjson rep "$rep" --arg mode "$mode" \
        --argjson gate "$gate" --argjson sink "$sink" --argjson gen "$gen" --argjson swap "$swap" \
        --argjson dataplane "$dataplane" --argjson qmax "$quiet_max" \
        --argjson gen_cpu "$gen_cpu" --argjson fw_cpu "$fw_cpu" \
        '{scenario: $sc, workload: $wl, rep: $rep, mode: $mode, gen_cpu: $gen_cpu, fw_cpu: $fw_cpu,
          quiet: (($gate.quiet // false) and (($sink.background_pct // 1e9) <= $qmax)),
          quiet_max_pct: $qmax, gate: $gate, sink: $sink, gen: $gen, swap: $swap,
          dataplane: $dataplane}')
    echo "$line" >>"$raw"
    jq -r '"    \(.workload) \(.scenario) \(.mode) rep \(.rep): \(.sink.pps | floor) delivered pps, "
        + "\(.sink.nfqueue | map(.queued) | add // 0) queued, background \(.sink.background_pct)%, "
        + (if .quiet then "quiet" else "NOT quiet" end)
        + (if .swap then ", swap \(.swap.seconds) s ok=\(.swap.ok)" else "" end)
        + (if .mode != "sat" then ", lost \(.gen.sent - .sink.run.received_udp), queue drops "
            + "\(.sink.run.nfqueue | map(.queue_dropped + .user_dropped) | add // 0)" else "" end)' \
        <<<"$line"
}

read -r -a scenario_list <<<"$scenarios"
n_sc=${#scenario_list[@]}
echo "==> $reps repetitions x [$workloads] x [$scenarios], ${window}s windows after ${warmup}s warm-up"
[ -z "$swap_workloads" ] ||
    echo "    and below saturation: meds x [$swap_workloads] x (steady, swap) at $swap_rate pps, ${swap_window}s windows"
for ((rep = 1; rep <= reps; rep++)); do
    for wl in $workloads; do
        # Rotate the order every repetition so that no scenario always runs first or last.
        for ((k = 0; k < n_sc; k++)); do
            run_one "${scenario_list[$(((k + rep - 1) % n_sc))]}" "$wl" "$rep" sat
        done
    done
    for wl in $swap_workloads; do
        if [ $((rep % 2)) -eq 1 ]; then
            run_one meds "$wl" "$rep" steady
            run_one meds "$wl" "$rep" swap
        else
            run_one meds "$wl" "$rep" swap
            run_one meds "$wl" "$rep" steady
        fi
    done
done

# ---- report ------------------------------------------------------------------------------------
{
    echo "## Packet-rate bench ($(date -u +%F), $(nproc) CPUs, kernel $(uname -r))"
    echo
    echo "$reps repetitions x ${window}s windows, scenarios interleaved; UDP: 60-byte frames (18-byte payload); TCP: 18-byte writes."
    if [ "$need_lists" -eq 1 ]; then
        echo "meds: lists $(jq -c .lists "$out/logs/lists.json");"
        echo "198.18.0.0/15 (the bench range) removed from the allowlist, so every packet walks the whole chain;"
        echo "meds-dataplane flags: ${dp_flags[*]:-none}."
    fi
    echo "Quiet run: the quiet gate passed (machine <= ${quiet_max}% busy before the run) and the background load in the window was <= ${quiet_max}% of all CPUs."
    cat <<'EOF'

Columns: *arriving pps* = packets per second arriving at the firewall's veth in the window (the
offered load); *delivered pps* = packets that reached the receiving socket per second in the
window (UDP datagrams; `tcp`: TCP segments taken in by the firewall's stack); *vs kernel* = median /
median of `kernel` in the same workload; *queued pps* = packets handed to the daemon; *daemon
µs per queued packet* = daemon CPU time (all threads, user + system, including the kernel work
done in its syscalls) / packets queued, in the window; *queued per flow* = packets queued over
the whole run / flows (offload: only a flow's first packets reach the daemon);
*queue_dropped* / *user_dropped* = NFQUEUE queue-full / netlink-socket drops over the whole
runs (`/proc/net/netfilter/nfnetlink_queue`); *socket drops* = UDP receive-buffer drops at the
receiver; *conntrack drops (evictions)* = packets dropped because the conntrack table was full
(entries evicted to make room: `early_drop`); *busy %* = the generator's CPU (the generator and
the RX softirq up to the queue or socket) and the firewall's CPU (daemon, verdict reinjection,
receiver) in the window: a saturated CPU is the bottleneck of the run;
*background* = machine busy time minus the bench's own processes, in % of all CPUs;
*daemon drops* = packets meds-dataplane dropped by decision (as last reported; expected 0).
Below saturation: *lost* = datagrams sent minus datagrams received over the whole run.
EOF
    "$bin/meds-pktsink" report "$raw"
} >"$out/summary.md"
cat "$out/summary.md"
last=$(find "$out/logs" -name '*.meds.sat.*.status.json' | sort | tail -n 1)
if [ -n "$last" ]; then
    echo
    echo "meds-dataplane decisions reported in its last run ($last):"
    jq -c '.dataplane_stats.decisions // "none reported"' "$last"
fi
echo
echo "raw data: $raw"
