#!/usr/bin/env bash
# udplab against iperf3, iperf (2.x) and sockperf on loopback, in one invocation.
#
#   benches/compare.sh            full run: every run 10 s, 3 runs each, medians (about 25 min)
#   benches/compare.sh --quick    development: 1 run each, 3 s runs, small memory runs
#   benches/compare.sh --only reliable   only the reliable-mode peers: KCP, udplab --reliable, TCP
#
# Options: --udplab PATH (default: $CARGO_TARGET_DIR or target, release build),
#          --only 1,2,...,reliable (run only these scenarios), --out DIR (default: results),
#          --mem-reps N (runs of the large --count run in scenario 6; default 1, quick 1),
#          --reliable-count N (messages per reliable run; default 20000, quick 2000),
#          --reliable-cases LIST (comma-separated case names, default all: see RELIABLE_CASES).
# Writes DIR/bench-<date>.csv and DIR/bench-<date>.md (-quick in the names with --quick) and
# prints the table and every target with PASS/FAIL. Raw logs stay in a temporary directory
# whose path is printed. Sender on CPU 0, receiver on CPU 1 (taskset); only 127.0.0.1; every
# process bounded with `timeout -k 3 N`. Installs iperf3, iperf and sockperf from the
# distribution's packages when missing (needs root and apt-get).
# The reliable scenario writes DIR/reliable-peers-<date>.md (and .jsonl, one record per run): every
# peer through `udplab proxy` with the same impairment both ways, 1000 msg/s x 1200 B; its TCP
# rows need root, ip and nft (network namespaces) and are skipped with the reason otherwise.
set -uo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
TOOLS="$HERE/compare_tools.py"

QUICK=0
ONLY="1,2,3,4,5,6,reliable"
RELIABLE_COUNT=""
RELIABLE_CASES_OPT=""
OUT="$REPO/results"
UDPLAB=""
MEM_REPS_OPT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --only) ONLY="$2"; shift ;;
        --out) OUT="$2"; shift ;;
        --udplab) UDPLAB="$2"; shift ;;
        --mem-reps) MEM_REPS_OPT="$2"; shift ;;
        --reliable-count) RELIABLE_COUNT="$2"; shift ;;
        --reliable-cases) RELIABLE_CASES_OPT="$2"; shift ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        *) echo "compare.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

if [ "$QUICK" = 1 ]; then
    REPS=1; DUR=3; SEARCH_DUR=1; SEARCH_STEPS=5; MEM_SMALL=1000000; MEM_BIG=3000000
    MEM_BIG_REPS=1; SUFFIX="-quick"
else
    # One 100M run by default: it lasts as long as ten 10M runs, and its peak RSS is what counts.
    REPS=3; DUR=10; SEARCH_DUR=2; SEARCH_STEPS=7; MEM_SMALL=10000000; MEM_BIG=100000000
    MEM_BIG_REPS=1; SUFFIX=""
fi
[ -n "$MEM_REPS_OPT" ] && MEM_BIG_REPS=$MEM_REPS_OPT
PACE_PPS=100000
ZERO_LOSS_PCT=0.1

want() { case ",$ONLY," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
log() { printf '%s [%4ds] %s\n' "$(date +%H:%M:%S)" "$((SECONDS - T0))" "$*" >&2; }
T0=$SECONDS

# --- tools -------------------------------------------------------------------------------------
# The reliable scenario alone needs none of the other tools.
TOOL_SCENARIOS=0
for sc in 1 2 3 4 5 6; do want $sc && TOOL_SCENARIOS=1; done
missing=()
if [ "$TOOL_SCENARIOS" = 1 ]; then
    command -v iperf3 >/dev/null || missing+=(iperf3)
    command -v iperf >/dev/null || missing+=(iperf)
    command -v sockperf >/dev/null || missing+=(sockperf)
fi
for t in taskset timeout python3; do
    command -v $t >/dev/null || { echo "compare.sh: $t is required" >&2; exit 2; }
done
[ -x /usr/bin/time ] || missing+=(time)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log "installing ${missing[*]}"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
            || { echo "compare.sh: could not install ${missing[*]}" >&2; exit 2; }
    else
        echo "compare.sh: missing ${missing[*]} (run as root with apt-get, or install them)" >&2
        exit 2
    fi
fi
if [ -z "$UDPLAB" ]; then
    UDPLAB="${CARGO_TARGET_DIR:-$REPO/target}/release/udplab"
    if [ ! -x "$UDPLAB" ]; then
        log "building udplab (release)"
        (cd "$REPO" && cargo build --release --quiet) || exit 2
    fi
fi
[ -x "$UDPLAB" ] || { echo "compare.sh: no udplab binary at $UDPLAB" >&2; exit 2; }

RAW="$(mktemp -d "${TMPDIR:-/tmp}/udplab-bench.XXXXXX")"
RECORDS="$RAW/records.jsonl"
: > "$RECORDS"
TF='%U %S %e %M'   # GNU time: user s, sys s, elapsed s, max RSS KiB
DATE="$(date +%Y-%m-%d)"
mkdir -p "$OUT"
CSV="$OUT/bench-$DATE$SUFFIX.csv"
MD="$OUT/bench-$DATE$SUFFIX.md"
log "raw logs in $RAW"
# On Ctrl-C: stop this script's own background processes (each is bounded by timeout anyway).
trap 'for p in $(jobs -p); do kill "$p" 2>/dev/null; done; echo "interrupted; raw logs in $RAW" >&2; exit 130' INT TERM

# --- helpers -----------------------------------------------------------------------------------
snap() { head -1 /proc/stat > "$1"; }
free_port() { python3 "$TOOLS" free-port; }
limit_for() { echo $(( ${1%.*} + 20 )); }   # timeout for a run of $1 seconds

# Waits until FILE's first line says "listening on ADDR"; prints ADDR.
wait_listen() {
    local f=$1 i
    for i in $(seq 200); do
        if [ -s "$f" ] && head -1 "$f" | grep -q '^listening on '; then
            head -1 "$f" | awk '{print $3}'
            return 0
        fi
        sleep 0.05
    done
    return 1
}

# Waits until something listens on 127.0.0.1:PORT (proto tcp or udp).
wait_port() {
    local proto=$1 port=$2 i opt
    [ "$proto" = tcp ] && opt=-Hltn || opt=-Hlun
    for i in $(seq 200); do
        ss $opt "sport = :$port" 2>/dev/null | grep -q . && return 0
        sleep 0.05
    done
    return 1
}

# Stops a server started as `/usr/bin/time ... taskset ... timeout ... SERVER &` (pid $1): SIGINT
# to the `timeout` process, which passes it on, so GNU time still reports the server's usage.
stop_server() {
    local tpid=$1 child i
    child="$(pgrep -P "$tpid" | head -1)"
    [ -n "$child" ] && kill -INT "$child" 2>/dev/null
    for i in $(seq 60); do kill -0 "$tpid" 2>/dev/null || break; sleep 0.05; done
    wait "$tpid" 2>/dev/null
}

record() { python3 "$TOOLS" record "$@" --records "$RECORDS"; }

# Optional AF_PACKET capture of departures to PORT (scenario 4): start_capture DIR PORT SIZE
start_capture() {
    local d=$1 port=$2 size=$3 i
    rm -f "$d/cap.ready"
    taskset -c 1 timeout -k 3 $((DUR + 40)) python3 "$TOOLS" capture --port "$port" --size "$size" \
        --out "$d/capture.json" --ready "$d/cap.ready" --max-seconds $((DUR + 30)) --idle 5 \
        > "$d/capture.log" 2>&1 &
    CAP_PID=$!
    for i in $(seq 100); do [ -f "$d/cap.ready" ] && return 0; sleep 0.05; done
    return 1
}
stop_capture() {
    [ -n "${CAP_PID:-}" ] || return 0
    kill -INT "$CAP_PID" 2>/dev/null
    wait "$CAP_PID" 2>/dev/null
    CAP_PID=""
}

# udplab_run SCEN TOOL CASE REP SIZE DUR "RECV ARGS" SEND ARGS...   (DUR 0: --count run)
# Sets LAST="loss_pct recv_pps sent_pps". CAPTURE=1 taps departures; EXTRA_REC adds record args.
udplab_run() {
    local sc=$1 tool=$2 case=$3 rep=$4 size=$5 dur=$6 rargs=$7; shift 7
    local d="$RAW/$sc.$tool.$case.$rep.$RANDOM" limit rpid addr rc=0 cap=()
    mkdir -p "$d"
    limit=${LIMIT:-$(limit_for "$dur")}
    snap "$d/stat0"
    # shellcheck disable=SC2086
    /usr/bin/time -o "$d/rtime" -f "$TF" taskset -c 1 timeout -k 3 "$limit" \
        "$UDPLAB" recv --bind 127.0.0.1:0 --once --quiet $rargs > "$d/recv.out" 2> "$d/recv.err" &
    rpid=$!
    if ! addr="$(wait_listen "$d/recv.out")"; then
        log "udplab recv did not start: $(cat "$d/recv.err")"; stop_server $rpid; LAST="nan nan nan"; return 1
    fi
    if [ "${CAPTURE:-0}" = 1 ]; then
        start_capture "$d" "${addr##*:}" "$size" && cap=(--capture "$d/capture.json" --nominal-gap-us "$(python3 -c "print(1e6/$PACE_PPS)")")
    fi
    local dur_args=()
    [ "$dur" != 0 ] && dur_args=(--duration "${dur}s")
    /usr/bin/time -o "$d/stime" -f "$TF" taskset -c 0 timeout -k 3 "$limit" \
        "$UDPLAB" send "$addr" --size "$size" "${dur_args[@]}" --json "$d/send.json" --quiet "$@" \
        > "$d/send.out" 2> "$d/send.err" || rc=$?
    wait $rpid 2>/dev/null
    [ "${CAPTURE:-0}" = 1 ] && stop_capture
    snap "$d/stat1"
    echo "udplab send ${addr} --size $size ${dur_args[*]} $*  (recv $rargs) rc=$rc" > "$d/cmd"
    [ $rc -ne 0 ] && [ $rc -ne 1 ] && log "udplab send rc=$rc: $(tail -2 "$d/send.err")"
    LAST="$(record udplab --scenario "$sc" --tool "$tool" --case "$case" --rep "$rep" \
        --size "$size" --duration "$dur" --json "$d/send.json" --stime "$d/stime" --rtime "$d/rtime" \
        --stat0 "$d/stat0" --stat1 "$d/stat1" --rc $rc "${cap[@]}" ${EXTRA_REC[@]+"${EXTRA_REC[@]}"})"
}

# iperf3_run SCEN TOOL CASE REP SIZE DUR CLIENT ARGS...
iperf3_run() {
    local sc=$1 tool=$2 case=$3 rep=$4 size=$5 dur=$6; shift 6
    local d="$RAW/$sc.$tool.$case.$rep.$RANDOM" limit port spid rc=0 cap=()
    mkdir -p "$d"
    limit=$(limit_for "$dur")
    port=$(free_port)
    snap "$d/stat0"
    /usr/bin/time -o "$d/rtime" -f "$TF" taskset -c 1 timeout -k 3 "$limit" \
        iperf3 -s -B 127.0.0.1 -p "$port" -1 -J > "$d/server.json" 2>&1 &
    spid=$!
    wait_port tcp "$port" || log "iperf3 server not listening on $port"
    if [ "${CAPTURE:-0}" = 1 ]; then
        start_capture "$d" "$port" "$size" && cap=(--capture "$d/capture.json" --nominal-gap-us "$(python3 -c "print(1e6/$PACE_PPS)")")
    fi
    /usr/bin/time -o "$d/stime" -f "$TF" taskset -c 0 timeout -k 3 "$limit" \
        iperf3 -c 127.0.0.1 -p "$port" -u -t "$dur" -J -l "$size" "$@" > "$d/client.json" 2> "$d/client.err" || rc=$?
    # -1: the server exits after the test; stop it if it did not.
    local i; for i in $(seq 60); do kill -0 $spid 2>/dev/null || break; sleep 0.05; done
    stop_server $spid
    [ "${CAPTURE:-0}" = 1 ] && stop_capture
    snap "$d/stat1"
    echo "iperf3 -c 127.0.0.1 -p $port -u -t $dur -J -l $size $* rc=$rc" > "$d/cmd"
    LAST="$(record iperf3 --scenario "$sc" --tool "$tool" --case "$case" --rep "$rep" \
        --size "$size" --duration "$dur" --json "$d/client.json" --stime "$d/stime" --rtime "$d/rtime" \
        --stat0 "$d/stat0" --stat1 "$d/stat1" --rc $rc "${cap[@]}" ${EXTRA_REC[@]+"${EXTRA_REC[@]}"})"
}

# iperf2_run SCEN TOOL CASE REP SIZE DUR "SERVER ARGS" CLIENT ARGS...
iperf2_run() {
    local sc=$1 tool=$2 case=$3 rep=$4 size=$5 dur=$6 sargs=$7; shift 7
    local d="$RAW/$sc.$tool.$case.$rep.$RANDOM" limit port spid rc=0 cap=()
    mkdir -p "$d"
    limit=$(limit_for "$dur")
    port=$(free_port)
    snap "$d/stat0"
    # shellcheck disable=SC2086
    /usr/bin/time -o "$d/rtime" -f "$TF" taskset -c 1 timeout -k 3 "$limit" \
        iperf -s -u -e -B 127.0.0.1 -p "$port" $sargs > "$d/server.out" 2>&1 &
    spid=$!
    wait_port udp "$port" || log "iperf2 server not listening on $port"
    if [ "${CAPTURE:-0}" = 1 ]; then
        start_capture "$d" "$port" "$size" && cap=(--capture "$d/capture.json" --nominal-gap-us "$(python3 -c "print(1e6/$PACE_PPS)")")
    fi
    /usr/bin/time -o "$d/stime" -f "$TF" taskset -c 0 timeout -k 3 "$limit" \
        iperf -c 127.0.0.1 -p "$port" -u -t "$dur" -e -l "$size" "$@" > "$d/client.out" 2>&1 || rc=$?
    sleep 0.3   # the server prints its report as the test ends; give it a moment
    stop_server $spid
    [ "${CAPTURE:-0}" = 1 ] && stop_capture
    snap "$d/stat1"
    echo "iperf -c 127.0.0.1 -p $port -u -t $dur -e -l $size $*  (server $sargs) rc=$rc" > "$d/cmd"
    LAST="$(record iperf2 --scenario "$sc" --tool "$tool" --case "$case" --rep "$rep" \
        --size "$size" --duration "$dur" --client "$d/client.out" --server "$d/server.out" \
        --stime "$d/stime" --rtime "$d/rtime" --stat0 "$d/stat0" --stat1 "$d/stat1" --rc $rc \
        "${cap[@]}" ${EXTRA_REC[@]+"${EXTRA_REC[@]}"})"
}

# sockperf_run SCEN CASE REP SIZE DUR
sockperf_run() {
    local sc=$1 case=$2 rep=$3 size=$4 dur=$5
    local d="$RAW/$sc.sockperf.$case.$rep.$RANDOM" limit port spid rc=0
    mkdir -p "$d"
    limit=$(limit_for "$dur")
    port=$(free_port)
    snap "$d/stat0"
    /usr/bin/time -o "$d/rtime" -f "$TF" taskset -c 1 timeout -k 3 "$limit" \
        sockperf server -i 127.0.0.1 -p "$port" > "$d/server.out" 2>&1 &
    spid=$!
    wait_port udp "$port" || log "sockperf server not listening on $port"
    /usr/bin/time -o "$d/stime" -f "$TF" taskset -c 0 timeout -k 3 "$limit" \
        sockperf ping-pong -i 127.0.0.1 -p "$port" -m "$size" -t "$dur" --full-rtt \
        > "$d/client.out" 2>&1 || rc=$?
    stop_server $spid
    snap "$d/stat1"
    echo "sockperf ping-pong -i 127.0.0.1 -p $port -m $size -t $dur --full-rtt rc=$rc" > "$d/cmd"
    LAST="$(record sockperf --scenario "$sc" --tool sockperf --case "$case" --rep "$rep" \
        --size "$size" --duration "$dur" --client "$d/client.out" --stime "$d/stime" \
        --rtime "$d/rtime" --stat0 "$d/stat0" --stat1 "$d/stat1" --rc $rc)"
}

# ceiling_run SCEN CASE REP SIZE DUR MODE: bare Python programs, 4 MiB buffers.
#   recvmmsg: GSO sender (sendmsg + UDP_SEGMENT, 64 datagrams a call) -> recvmmsg(64) receiver
#   gro:      the same sender -> UDP_GRO receiver (informational)
#   pacer:    busy-wait pacer, one send() per datagram -> recvmmsg receiver (scenario 4's floor)
# CEIL_PPS paces the sender; CEIL_BUF=0 leaves both socket buffers at the kernel's default.
# CAPTURE=1 taps departures.
ceiling_run() {
    local sc=$1 case=$2 rep=$3 size=$4 dur=$5 mode=$6
    local d="$RAW/$sc.ceiling-$mode.$case.$rep.$RANDOM" limit rpid addr rc=0 tool note cap=()
    local rargs=() sargs=()
    case $mode in
        recvmmsg) tool=bare-gso-recvmmsg
            note="Python: socket.sendmsg with UDP_SEGMENT (64 datagrams a call), recvmmsg(64) via ctypes" ;;
        gro) tool=bare-gso-gro; rargs=(--gro)
            note="Python: the same GSO sender, a UDP_GRO receiver (recvmsg); informational, not a target" ;;
        pacer) tool=bare-spin-pacer; sargs=(--plain)
            note="Python: busy-wait on perf_counter, one send() per datagram, no catch-up bursts: the gap floor of this machine" ;;
    esac
    local offered=unpaced bufsize=${CEIL_BUF:-$((4 << 20))}   # CEIL_BUF=0: default buffers
    [ -n "${CEIL_PPS:-}" ] && { sargs+=(--pps "$CEIL_PPS"); offered="$CEIL_PPS pps"; }
    mkdir -p "$d"
    limit=$(limit_for "$dur")
    snap "$d/stat0"
    /usr/bin/time -o "$d/rtime" -f "$TF" taskset -c 1 timeout -k 3 "$limit" \
        python3 "$TOOLS" ceiling-recv "${rargs[@]}" --out "$d/recv.json" --rcvbuf "$bufsize" \
        --max-seconds $((dur + 10)) > "$d/recv.out" 2> "$d/recv.err" &
    rpid=$!
    if ! addr="$(wait_listen "$d/recv.out")"; then
        log "ceiling receiver did not start"; stop_server $rpid; LAST="nan nan nan"; return 1
    fi
    if [ "${CAPTURE:-0}" = 1 ]; then
        start_capture "$d" "${addr##*:}" "$size" && cap=(--capture "$d/capture.json" --nominal-gap-us "$(python3 -c "print(1e6/$PACE_PPS)")")
    fi
    /usr/bin/time -o "$d/stime" -f "$TF" taskset -c 0 timeout -k 3 "$limit" \
        python3 "$TOOLS" ceiling-send "$addr" --out "$d/send.json" --size "$size" \
        --sndbuf "$bufsize" --duration "$dur" "${sargs[@]}" 2> "$d/send.err" || rc=$?
    wait $rpid 2>/dev/null
    [ "${CAPTURE:-0}" = 1 ] && stop_capture
    snap "$d/stat1"
    echo "ceiling-send $addr --size $size --duration $dur ${sargs[*]} (recv ${rargs[*]}) rc=$rc" > "$d/cmd"
    LAST="$(record ceiling --scenario "$sc" --tool "$tool" --case "$case" --rep "$rep" \
        --size "$size" --duration "$dur" --recv-json "$d/recv.json" --send-json "$d/send.json" \
        --stime "$d/stime" --rtime "$d/rtime" --stat0 "$d/stat0" --stat1 "$d/stat1" --rc $rc \
        --offered "$offered" --note "$note" "${cap[@]}" \
        ${EXTRA_REC[@]+"${EXTRA_REC[@]}"})"
}

# Median of one field over this scenario's records (for later scenarios' parameters).
median_of() {  # SCEN TOOL CASE FIELD
    python3 - "$RECORDS" "$@" <<'EOF'
import json, statistics, sys
path, sc, tool, case, field = sys.argv[1:]
vals = []
for line in open(path):
    r = json.loads(line)
    if r["scenario"] == sc and r["tool"] == tool and r["case"] == case \
            and r.get("phase") != "search" and isinstance(r.get(field), (int, float)):
        vals.append(r[field])
print(statistics.median(vals) if vals else "")
EOF
}
ge() { python3 -c "import sys; a=float(sys.argv[1]); sys.exit(0 if a==a and a>=float(sys.argv[2]) else 1)" "$1" "$2"; }
le() { python3 -c "import sys; a=float(sys.argv[1]); sys.exit(0 if a==a and a<=float(sys.argv[2]) else 1)" "$1" "$2"; }

BUF4="--sndbuf 4M --rcvbuf 4M"

# --- machine description -----------------------------------------------------------------------
# Only the tool scenarios (1-6) write bench-<date>.md; the reliable scenario has its own file.
if [ "$TOOL_SCENARIOS" = 1 ]; then
{
    echo "# udplab vs iperf3 / iperf2 / sockperf on loopback — $DATE$SUFFIX"
    echo
    echo "Produced by \`benches/compare.sh$([ $QUICK = 1 ] && echo ' --quick')\` (raw logs were in $RAW)."
    echo
    echo "## Machine"
    echo
    echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) vCPU ($(grep -m1 -o 'hypervisor' /proc/cpuinfo >/dev/null && echo 'virtual machine' || echo 'bare metal'))"
    echo "- Memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo); kernel $(uname -r); $(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "- net.core.rmem_default/wmem_default $(cat /proc/sys/net/core/rmem_default)/$(cat /proc/sys/net/core/wmem_default), rmem_max/wmem_max $(cat /proc/sys/net/core/rmem_max)/$(cat /proc/sys/net/core/wmem_max)"
    echo "- Tools: udplab $(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null) ($UDPLAB), $(iperf3 --version | head -1), $(iperf -v 2>&1 | head -1), $(sockperf --version 2>&1 | head -1 | tr -d '\r'), $(python3 --version)"
    echo "- Load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (the machine is shared with other jobs; see bg CPU %)"
    # Quoted heredoc: the backticks are Markdown, never command substitution.
    sed "s/@DUR@/$DUR/g" <<'EOF'
- Commands (receiver first, each under `taskset -c 1 timeout -k 3 N`, sender under `taskset -c 0 timeout -k 3 N`, both inside `/usr/bin/time`):
  - udplab: `udplab recv --bind 127.0.0.1:0 --once --quiet [--rcvbuf 4M]`; `udplab send ADDR --size B --duration @DUR@s --json F --quiet [--sndbuf 4M --rcvbuf 4M]` plus `--rate max --send-mode plain|mmsg|gso` (1), `--pps N` (2, 4), `--rate 1G` (3), `--pps N --echo` (5), `--rate max --count N` (6)
  - iperf3: `iperf3 -s -B 127.0.0.1 -p P -1 -J`; `iperf3 -c 127.0.0.1 -p P -u -t @DUR@ -J -l B` plus `-b 0 -w 4M` (1), `-b <pps*B*8> -w 4M` (2, 4), `-b 1G` (3)
  - iperf2: `iperf -s -u -e -B 127.0.0.1 -p P [-w 4M]` (stopped with SIGINT after the test); `iperf -c 127.0.0.1 -p P -u -t @DUR@ -e -l B` plus `-b 10G -w 4M` (1), `-b 1g` (3), `-b 100000pps -w 4M` (4); received figures from the server's Lost/Total line
  - sockperf: `sockperf server -i 127.0.0.1 -p P`; `sockperf ping-pong -i 127.0.0.1 -p P -m 64 -t @DUR@ --full-rtt` (5)
  - ceiling (1, 64 B): `benches/compare_tools.py ceiling-recv` (recvmmsg(64) through ctypes, SO_RCVBUF 4M; `--gro`: UDP_GRO + recvmsg) and `ceiling-send` (socket.sendmsg with UDP_SEGMENT, 64 segments a call, SO_SNDBUF 4M)
  - gaps (4): `benches/compare_tools.py capture`: AF_PACKET socket on lo (on CPU 1) with a BPF filter for outgoing UDP to the receiver's port, SO_TIMESTAMPNS; a GSO packet counts as its datagrams departing together (gap 0)
EOF
    echo "- Loss = (sent − distinct received) / sent for every tool. CPU % = (user + sys CPU seconds from GNU time) / test duration. Received figures are the receiver's."
    echo "- Runs: $REPS per configuration, ${DUR} s each (zero-loss search steps ${SEARCH_DUR} s); sender taskset -c 0, receiver taskset -c 1; 127.0.0.1 only"
} > "$MD.tmp"
fi

# --- 1. maximum offered rate -------------------------------------------------------------------
if want 1; then
    for size in 64 1400; do
        case="${size}B"
        for rep in $(seq $REPS); do
            log "1 max rate $case run $rep/$REPS"
            for mode in plain mmsg gso; do
                EXTRA_REC=(--offered "--rate max --send-mode $mode")
                udplab_run 1-max-rate "udplab-$mode" "$case" "$rep" "$size" "$DUR" "--rcvbuf 4M" \
                    --rate max --send-mode $mode $BUF4
            done
            EXTRA_REC=(--offered "-b 0 (unlimited)")
            iperf3_run 1-max-rate iperf3 "$case" "$rep" "$size" "$DUR" -b 0 -w 4M
            EXTRA_REC=(--offered "-b 10G")
            iperf2_run 1-max-rate iperf2 "$case" "$rep" "$size" "$DUR" "-w 4M" -b 10G -w 4M
            EXTRA_REC=()
            if [ "$size" = 64 ]; then
                ceiling_run 1-max-rate "$case" "$rep" "$size" "$DUR" recvmmsg
                ceiling_run 1-max-rate "$case" "$rep" "$size" "$DUR" gro
            fi
        done
    done
fi

# --- 2. highest rate with <= 0.1% loss at 64 B -------------------------------------------------
# Bisection on the offered datagram rate with short runs, then REPS confirming runs of full length
# at the rate found (stepping down 7%, up to 3 times, while their median loss is above the threshold).
zero_loss_run() {  # TOOL SCEN REP PPS DUR
    case $1 in
        udplab) udplab_run "$2" udplab 64B "$3" 64 "$5" "--rcvbuf 4M" --pps "$4" $BUF4 ;;
        iperf3) iperf3_run "$2" iperf3 64B "$3" 64 "$5" -b $(($4 * 64 * 8)) -w 4M ;;
        bare-gso-recvmmsg) CEIL_PPS=$4 ceiling_run "$2" 64B "$3" 64 "$5" recvmmsg ;;
    esac
}
zero_loss_search() {  # TOOL HI_PPS
    local tool=$1 hi=$2 lo=0 step mid loss sent_pps res i
    EXTRA_REC=(--note "search")
    for step in $(seq $SEARCH_STEPS); do
        mid=$(( (lo + hi) / 2 ))
        [ $mid -lt 1000 ] && break
        zero_loss_run "$tool" 2-search "$step" "$mid" "$SEARCH_DUR"
        loss=${LAST%% *}
        sent_pps=${LAST##* }
        # A step passes when the loss is within the threshold and the sender really offered the
        # rate (a CPU-bound sender that falls short has not shown that rate to be loss-free).
        if le "$loss" $ZERO_LOSS_PCT && ge "$sent_pps" "$(( mid * 98 / 100 ))"; then
            lo=$mid; res=pass
        else
            hi=$mid; res=fail
        fi
        log "2 search $tool: $mid pps -> sent $sent_pps pps, loss ${loss}% ($res)"
    done
    EXTRA_REC=()
    local rate=$lo
    [ "$rate" -lt 1000 ] && rate=1000
    for i in 1 2 3 4; do
        for rep in $(seq $REPS); do
            EXTRA_REC=(--offered "$rate pps" --target-pps "$rate")
            zero_loss_run "$tool" "2-confirm-$i" "$rep" "$rate" "$DUR"
            EXTRA_REC=()
        done
        loss="$(median_of "2-confirm-$i" "$tool" 64B loss_pct)"
        log "2 confirm $tool at $rate pps: median loss ${loss}%"
        if le "$loss" $ZERO_LOSS_PCT; then
            # The confirmed runs become the scenario's rows.
            python3 - "$RECORDS" "2-confirm-$i" "$tool" <<'EOF'
import json, sys
path, sc, tool = sys.argv[1:]
lines = [json.loads(l) for l in open(path)]
for r in lines:
    if r["scenario"] == sc and r["tool"] == tool:
        r["scenario"] = "2-zero-loss"
with open(path, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in lines)
EOF
            return 0
        fi
        rate=$(( rate * 93 / 100 ))
    done
    log "2 $tool: no confirmed zero-loss rate"
}
if want 2; then
    hi_u="$(median_of 1-max-rate udplab-gso 64B sent_pps)"
    hi_i="$(median_of 1-max-rate iperf3 64B sent_pps)"
    # Without scenario 1 in this invocation: generous upper bounds.
    hi_u=${hi_u:-2000000}; hi_i=${hi_i:-600000}
    # Search a little above what the sender reached unpaced (a paced sender never exceeds it).
    zero_loss_search udplab "$(python3 -c "print(int(float('$hi_u') * 1.05))")"
    zero_loss_search iperf3 "$(python3 -c "print(int(float('$hi_i') * 1.05))")"
    # The ceiling measured the same way: the bare GSO sender paced (64 datagrams per send).
    hi_c="$(median_of 1-max-rate bare-gso-recvmmsg 64B sent_pps)"
    zero_loss_search bare-gso-recvmmsg "$(python3 -c "print(int(float('${hi_c:-1500000}') * 1.05))")"
fi

# --- 3. 1 Gbit/s at 1400 B with the default buffers --------------------------------------------
if want 3; then
    for rep in $(seq $REPS); do
        log "3 1 Gbit/s default buffers run $rep/$REPS"
        EXTRA_REC=(--offered "1 Gbit/s" --target-pps "$(python3 -c "print(1e9/1400/8)")")
        udplab_run 3-1gbps-default-buf udplab 1400B "$rep" 1400 "$DUR" "" --rate 1G
        iperf3_run 3-1gbps-default-buf iperf3 1400B "$rep" 1400 "$DUR" -b 1G
        iperf2_run 3-1gbps-default-buf iperf2 1400B "$rep" 1400 "$DUR" "" -b 1g
        CEIL_PPS=$(( 1000000000 / (1400 * 8) )) CEIL_BUF=0 \
            ceiling_run 3-1gbps-default-buf 1400B "$rep" 1400 "$DUR" pacer
        EXTRA_REC=()
    done
fi

# --- 4. pacing at 100k datagrams/s -------------------------------------------------------------
if want 4; then
    for rep in $(seq $REPS); do
        log "4 pacing ${PACE_PPS}/s run $rep/$REPS"
        CAPTURE=1
        EXTRA_REC=(--offered "$PACE_PPS pps" --target-pps "$PACE_PPS")
        udplab_run 4-pacing-100k udplab 64B "$rep" 64 "$DUR" "--rcvbuf 4M" --pps $PACE_PPS $BUF4
        iperf3_run 4-pacing-100k iperf3 64B "$rep" 64 "$DUR" -b $((PACE_PPS * 64 * 8)) -w 4M
        iperf2_run 4-pacing-100k iperf2 64B "$rep" 64 "$DUR" "-w 4M" -b "${PACE_PPS}pps" -w 4M
        CEIL_PPS=$PACE_PPS ceiling_run 4-pacing-100k 64B "$rep" 64 "$DUR" pacer
        EXTRA_REC=()
        CAPTURE=0
    done
fi

# --- 5. RTT: udplab --echo vs sockperf ping-pong, 64 B -----------------------------------------
if want 5; then
    for rep in $(seq $REPS); do
        log "5 RTT sockperf run $rep/$REPS"
        sockperf_run 5-rtt 64B "$rep" 64 "$DUR"
    done
    # udplab sends open-loop: give it sockperf's ping-pong message rate (1k..100k/s).
    sp_rate="$(median_of 5-rtt sockperf 64B sent_pps)"
    rtt_pps="$(python3 -c "r='$sp_rate'; print(int(min(100000, max(1000, float(r) if r else 10000))))")"
    for rep in $(seq $REPS); do
        log "5 RTT udplab --echo at $rtt_pps/s run $rep/$REPS"
        EXTRA_REC=(--offered "$rtt_pps pps (sockperf's rate)")
        udplab_run 5-rtt udplab 64B "$rep" 64 "$DUR" "" --pps "$rtt_pps" --echo
        EXTRA_REC=()
    done
fi

# --- 6. memory of a small and a large --count run ----------------------------------------------
if want 6; then
    for n in $MEM_SMALL $MEM_BIG; do
        reps=$REPS
        [ "$n" = "$MEM_BIG" ] && reps=$MEM_BIG_REPS
        label="$(python3 -c "n=$n; print(f'{n//1000000}M' if n % 1000000 == 0 else str(n))")"
        for rep in $(seq "$reps"); do
            log "6 memory --count $label run $rep/$reps"
            EXTRA_REC=(--offered "--count $label, --rate max")
            LIMIT=$(( n / 100000 + 120 ))
            udplab_run 6-memory udplab "$label" "$rep" 64 0 "--rcvbuf 4M" --rate max --count "$n" $BUF4
            python3 - "$RECORDS" "$n" <<'EOF'
import json, sys
path, n = sys.argv[1], int(sys.argv[2])
lines = [json.loads(l) for l in open(path)]
lines[-1]["count"] = n
with open(path, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in lines)
EOF
            unset LIMIT
            EXTRA_REC=()
        done
    done
fi

# --- reliable: KCP (stock and eager), udplab --reliable, kernel TCP ---------------------------
if want reliable; then
    # shellcheck source=benches/reliable_peers.sh
    . "$HERE/reliable_peers.sh"
    reliable_scenario
fi

# --- report ------------------------------------------------------------------------------------
TOTAL=$((SECONDS - T0))
if [ "$TOOL_SCENARIOS" = 1 ]; then
    {
        echo "- Load average at end: $(cut -d' ' -f1-3 /proc/loadavg); total time of this run: $((TOTAL / 60)) min $((TOTAL % 60)) s"
    } >> "$MD.tmp"
    mv "$MD.tmp" "$MD"
    python3 "$TOOLS" report --records "$RECORDS" --csv "$CSV" --md "$MD"
    echo
    echo "wrote $CSV and $MD"
fi
echo "total time: $((TOTAL / 60)) min $((TOTAL % 60)) s; raw logs in $RAW"
