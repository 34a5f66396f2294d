# The `reliable` scenario of benches/compare.sh (sourced by it; uses its log, RAW, OUT, DATE,
# SUFFIX, QUICK, REPO, TOOLS and UDPLAB): what reliable delivery costs on one impaired path, for
# udplab --reliable and the peers users would reach for instead.
#
# Every UDP peer runs through `udplab proxy` with the same impairment on both directions (data
# and acknowledgements) and the same seeds, 1000 messages/s of 1200 B, RELIABLE_COUNT messages:
#   kcp-stock   the kcp crate in fast mode, nodelay(1, 10, 2, 1), windows 256, MTU 1400, update()
#               every 1 ms (KCP flushes at its 10 ms interval)
#   kcp-eager   the same, flush() right after every send() and every input() (as kcp-go does)
#   udplab-ordered / udplab-unordered   udplab send --reliable ordered|unordered to a udplab recv
# The proxy's JSON counters are the neutral meter of datagrams each way. Kernel TCP (one stream
# with TCP_NODELAY, informational) runs in three network namespaces A - R - B whose router R drops
# with an nftables `numgen random` rule in its forward hook (so the end hosts never see a local
# drop), at the same loss both ways; GE 5% uses netem's Gilbert-Elliott model on R's two egress
# links instead (nftables has no burst model), delay=20ms is netem on both. Root, ip and nft are
# needed for TCP; without them its rows say why they are missing.

# name|impairment of each direction (empty: none). Seeds are appended per direction.
RELIABLE_CASES=(
    "none|"
    "loss1|loss=1%"
    "loss5|loss=5%"
    "loss20|loss=20%"
    "ge5|loss=ge:p=1.316%,r=25%,h=0%,k=100%"
    "loss5-delay20|loss=5%,delay=20ms"
)
REL_FWD_SEED=11
REL_REV_SEED=12

# Builds benches/kcp_peer (once) and prints the path of its executable.
kcp_peer_path() {
    (cd "$REPO" && cargo bench --no-run --locked --bench kcp_peer --message-format=json 2>/dev/null) \
        | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "kcp_peer" and m.get("executable"):
        print(m["executable"])'
}

# Waits until FILE's first line starts with WORDS ("listening on" / "proxy listening on") and
# prints the address that follows, without a trailing comma.
wait_addr() {
    local f=$1 prefix=$2 i line
    for i in $(seq 200); do
        if [ -s "$f" ]; then
            line="$(head -1 "$f")"
            case "$line" in
                "$prefix "*) line="${line#"$prefix "}"; line="${line%%[ ,]*}"; echo "$line"; return 0 ;;
            esac
        fi
        sleep 0.05
    done
    return 1
}

# Starts `udplab proxy` toward $1 with impairment $2 both ways (seeded); sets PROXY_PID and
# PROXY_ADDR. Its JSON goes to $3.
start_rel_proxy() {
    local to=$1 spec=$2 json=$3 limit=$4 imp=()
    if [ -n "$spec" ]; then
        imp=(--impair "$spec,seed=$REL_FWD_SEED" --reverse-impair "$spec,seed=$REL_REV_SEED")
    fi
    timeout -k 3 "$limit" "$UDPLAB" proxy --listen 127.0.0.1:0 --to "$to" "${imp[@]}" \
        --interval 0 --json "$json" > "${json%.json}.out" 2>&1 &
    PROXY_PID=$!
    PROXY_ADDR="$(wait_addr "${json%.json}.out" "proxy listening on")"
}

# SIGINT ends the proxy, which then writes its JSON (timeout passes the signal on).
stop_rel_proxy() {
    kill -INT "$PROXY_PID" 2>/dev/null
    wait "$PROXY_PID" 2>/dev/null
}

# rel_kcp CASE SPEC DRIVE
rel_kcp() {
    local case=$1 spec=$2 drive=$3 d rpid rc=0 addr limit
    d="$RAW/reliable.$case.kcp-$drive"
    mkdir -p "$d"
    limit=$((RELIABLE_COUNT / 1000 + 60))
    timeout -k 3 "$limit" "$KCP_PEER" kcp-recv --bind 127.0.0.1:0 --count "$RELIABLE_COUNT" \
        --drive "$drive" --max-s $((limit - 5)) > "$d/recv.out" 2> "$d/recv.err" &
    rpid=$!
    addr="$(wait_addr "$d/recv.out" "listening on")" || { log "kcp_peer recv did not start: $(cat "$d/recv.err")"; kill "$rpid"; return 1; }
    start_rel_proxy "$addr" "$spec" "$d/proxy.json" "$limit"
    echo "kcp_peer kcp-send $PROXY_ADDR --count $RELIABLE_COUNT --drive $drive" > "$d/cmd"
    timeout -k 3 "$limit" "$KCP_PEER" kcp-send "$PROXY_ADDR" --count "$RELIABLE_COUNT" \
        --drive "$drive" --max-s $((limit - 10)) > "$d/send.out" 2> "$d/send.err" || rc=$?
    wait "$rpid" 2>/dev/null
    stop_rel_proxy
    python3 "$TOOLS" reliable-record --records "$REL_RECORDS" --case "$case" --impair "$spec" \
        --peer "kcp-$drive" --kind kcp --send "$d/send.out" --recv "$d/recv.out" \
        --proxy "$d/proxy.json" --rc "$rc" --count "$RELIABLE_COUNT"
}

# rel_udplab CASE SPEC MODE
rel_udplab() {
    local case=$1 spec=$2 mode=$3 d rpid rc=0 addr limit
    d="$RAW/reliable.$case.udplab-$mode"
    mkdir -p "$d"
    limit=$((RELIABLE_COUNT / 1000 + 60))
    timeout -k 3 "$limit" "$UDPLAB" recv --bind 127.0.0.1:0 --once --quiet --json "$d/recv.json" \
        > "$d/recv.out" 2> "$d/recv.err" &
    rpid=$!
    addr="$(wait_addr "$d/recv.out" "listening on")" || { log "udplab recv did not start: $(cat "$d/recv.err")"; kill "$rpid"; return 1; }
    start_rel_proxy "$addr" "$spec" "$d/proxy.json" "$limit"
    echo "udplab send $PROXY_ADDR --reliable $mode --pps 1000 --size 1200 --count $RELIABLE_COUNT --json F --quiet" > "$d/cmd"
    timeout -k 3 "$limit" "$UDPLAB" send "$PROXY_ADDR" --reliable "$mode" --pps 1000 --size 1200 \
        --count "$RELIABLE_COUNT" --json "$d/send.json" --quiet > "$d/send.out" 2> "$d/send.err" || rc=$?
    # A sender that refused its arguments never reached the receiver: end it.
    [ "$rc" = 2 ] && kill -INT "$rpid" 2>/dev/null
    wait "$rpid" 2>/dev/null
    stop_rel_proxy
    python3 "$TOOLS" reliable-record --records "$REL_RECORDS" --case "$case" --impair "$spec" \
        --peer "udplab-$mode" --kind udplab --send "$d/send.json" --recv "$d/recv.json" \
        --send-err "$d/send.err" --proxy "$d/proxy.json" --rc "$rc" --count "$RELIABLE_COUNT"
}

# Why kernel TCP cannot run here (empty when it can).
tcp_unavailable() {
    [ "$(id -u)" = 0 ] || { echo "needs root (network namespaces, nftables)"; return; }
    command -v ip >/dev/null || { echo "needs ip (iproute2)"; return; }
    command -v nft >/dev/null || { echo "needs nft (nftables)"; return; }
    command -v tc >/dev/null || { echo "needs tc (iproute2)"; return; }
    local probe="ulprobe$$"
    ip netns add "$probe" 2>/dev/null || { echo "cannot create a network namespace"; return; }
    ip netns del "$probe"
}

REL_NS=()
rel_ns_cleanup() {
    local n
    for n in ${REL_NS[@]+"${REL_NS[@]}"}; do ip netns del "$n" 2>/dev/null; done
    REL_NS=()
}

# The namespaces, links, addresses and routes of A - R - B (names in NS_A, NS_R, NS_B).
rel_ns_links() {
    local n
    for n in "$NS_A" "$NS_R" "$NS_B"; do
        ip netns add "$n" || return 1
        REL_NS+=("$n")
    done
    ip link add a0 netns "$NS_A" type veth peer name r0 netns "$NS_R" || return 1
    ip link add b0 netns "$NS_B" type veth peer name r1 netns "$NS_R" || return 1
    ip -n "$NS_A" addr add 10.199.1.1/24 dev a0 || return 1
    ip -n "$NS_R" addr add 10.199.1.2/24 dev r0 || return 1
    ip -n "$NS_B" addr add 10.199.2.1/24 dev b0 || return 1
    ip -n "$NS_R" addr add 10.199.2.2/24 dev r1 || return 1
    for n in "$NS_A:a0" "$NS_R:r0" "$NS_R:r1" "$NS_B:b0"; do
        ip -n "${n%%:*}" link set dev lo up || return 1
        ip -n "${n%%:*}" link set dev "${n#*:}" up || return 1
    done
    ip -n "$NS_A" route add default via 10.199.1.2 || return 1
    ip -n "$NS_B" route add default via 10.199.2.2 || return 1
    ip netns exec "$NS_R" sysctl -qw net.ipv4.ip_forward=1
}

# A - R - B with R forwarding; impairment in R. Sets NS_A, NS_B; returns nonzero with the reason
# in NS_ERR when a step fails.
rel_ns_setup() {
    local spec=$1 loss_pct="" delay="" ge=0 part n q
    NS_A="ulA$$"; NS_R="ulR$$"; NS_B="ulB$$"; NS_ERR=""
    for part in ${spec//,/ }; do
        case $part in
            loss=ge:*) ge=1 ;;
            loss=*%) loss_pct=${part#loss=}; loss_pct=${loss_pct%\%} ;;
            delay=*) delay=${part#delay=} ;;
        esac
    done
    rel_ns_links 2> "$RAW/netns.err" || { NS_ERR="namespace setup failed: $(head -1 "$RAW/netns.err")"; return 1; }
    # One datagram per skb, so a drop is one segment as on a real link (no ethtool needed).
    for n in "$NS_A:a0" "$NS_B:b0"; do
        ip -n "${n%%:*}" link set dev "${n#*:}" gso_max_segs 1 2>/dev/null ||
            log "could not set gso_max_segs 1 on ${n#*:}: TCP may send GSO super-packets"
    done
    local drop=""
    if [ -n "$loss_pct" ]; then
        q=$(python3 -c "print(round(float('$loss_pct') * 100))")
        drop="numgen random mod 10000 < $q counter name \"dropped\" drop"
    fi
    # The rule lives in R only: the end hosts never see a local drop.
    ip netns exec "$NS_R" nft -f - 2> "$RAW/nft.err" <<EOF || { NS_ERR="nft in R failed: $(head -1 "$RAW/nft.err")"; return 1; }
table ip udplab_rel {
    counter fwd_in {}
    counter rev_in {}
    counter dropped {}
    chain forward {
        type filter hook forward priority 0; policy accept;
        iifname "r0" counter name "fwd_in"
        iifname "r1" counter name "rev_in"
        $drop
    }
}
EOF
    local netem=()
    [ -n "$delay" ] && netem+=(delay "$delay")
    [ "$ge" = 1 ] && netem+=(loss gemodel 1.316% 25% 100% 0%)
    if [ ${#netem[@]} -gt 0 ]; then
        for n in r0 r1; do
            ip netns exec "$NS_R" tc qdisc add dev "$n" root netem "${netem[@]}" limit 10000 \
                2> "$RAW/tc.err" || { NS_ERR="tc netem (needed for GE loss and delay) failed, this kernel may lack sch_netem: $(head -1 "$RAW/tc.err")"; return 1; }
        done
    fi
}

# rel_tcp CASE SPEC
rel_tcp() {
    local case=$1 spec=$2 d rpid rc=0 addr limit
    d="$RAW/reliable.$case.tcp"
    mkdir -p "$d"
    if [ -n "$TCP_SKIP" ]; then
        python3 "$TOOLS" reliable-record --records "$REL_RECORDS" --case "$case" --impair "$spec" \
            --peer tcp --kind tcp --skip "$TCP_SKIP" --count "$RELIABLE_COUNT"
        return 0
    fi
    if ! rel_ns_setup "$spec"; then
        rel_ns_cleanup
        python3 "$TOOLS" reliable-record --records "$REL_RECORDS" --case "$case" --impair "$spec" \
            --peer tcp --kind tcp --skip "$NS_ERR" --count "$RELIABLE_COUNT"
        return 0
    fi
    # TCP under 20% loss both ways can fall far behind the offered rate: a generous bound.
    limit=$((RELIABLE_COUNT / 1000 * 4 + 60))
    ip netns exec "$NS_B" timeout -k 3 "$limit" "$KCP_PEER" tcp-recv --bind 10.199.2.1:0 \
        --count "$RELIABLE_COUNT" --max-s $((limit - 5)) > "$d/recv.out" 2> "$d/recv.err" &
    rpid=$!
    addr="$(wait_addr "$d/recv.out" "listening on")" || { log "tcp recv did not start: $(cat "$d/recv.err")"; kill "$rpid"; rel_ns_cleanup; return 1; }
    echo "ip netns exec A kcp_peer tcp-send $addr --count $RELIABLE_COUNT" > "$d/cmd"
    ip netns exec "$NS_A" timeout -k 3 "$limit" "$KCP_PEER" tcp-send "$addr" \
        --count "$RELIABLE_COUNT" --max-s $((limit - 10)) > "$d/send.out" 2> "$d/send.err" || rc=$?
    wait "$rpid" 2>/dev/null
    ip netns exec "$NS_R" nft -j list counters table ip udplab_rel > "$d/nft.json" 2>/dev/null
    ip netns exec "$NS_R" tc -s -j qdisc show > "$d/tc.json" 2>/dev/null
    rel_ns_cleanup
    python3 "$TOOLS" reliable-record --records "$REL_RECORDS" --case "$case" --impair "$spec" \
        --peer tcp --kind tcp --send "$d/send.out" --recv "$d/recv.out" --nft "$d/nft.json" \
        --rc "$rc" --count "$RELIABLE_COUNT"
}

reliable_scenario() {
    local entry case spec drive mode
    [ -n "$RELIABLE_COUNT" ] || { [ "$QUICK" = 1 ] && RELIABLE_COUNT=2000 || RELIABLE_COUNT=20000; }
    REL_RECORDS="$OUT/reliable-peers-$DATE$SUFFIX.jsonl"
    REL_MD="$OUT/reliable-peers-$DATE$SUFFIX.md"
    : > "$REL_RECORDS"
    log "reliable: building benches/kcp_peer"
    KCP_PEER="$(kcp_peer_path)"
    [ -x "$KCP_PEER" ] || { log "reliable: could not build benches/kcp_peer; scenario skipped"; return 1; }
    TCP_SKIP="$(tcp_unavailable)"
    [ -n "$TCP_SKIP" ] && log "reliable: kernel TCP rows skipped: $TCP_SKIP"
    trap 'rel_ns_cleanup; for p in $(jobs -p); do kill "$p" 2>/dev/null; done; echo "interrupted; raw logs in $RAW" >&2; exit 130' INT TERM
    local t0=$SECONDS
    for entry in "${RELIABLE_CASES[@]}"; do
        case=${entry%%|*}; spec=${entry#*|}
        if [ -n "$RELIABLE_CASES_OPT" ]; then
            case ",$RELIABLE_CASES_OPT," in *",$case,"*) ;; *) continue ;; esac
        fi
        for drive in stock eager; do
            log "reliable $case: kcp-$drive"
            rel_kcp "$case" "$spec" "$drive"
        done
        for mode in ordered unordered; do
            log "reliable $case: udplab --reliable $mode"
            rel_udplab "$case" "$spec" "$mode"
        done
        log "reliable $case: kernel TCP"
        rel_tcp "$case" "$spec"
    done
    {
        echo "# Reliable delivery on one impaired path: udplab --reliable vs KCP vs kernel TCP — $DATE$SUFFIX"
        echo
        echo "Produced by \`benches/compare.sh --only reliable$([ "$QUICK" = 1 ] && echo ' --quick')$([ -n "$RELIABLE_CASES_OPT" ] && echo " --reliable-cases $RELIABLE_CASES_OPT")$([ "$RELIABLE_COUNT" != 20000 ] && [ "$QUICK" != 1 ] && echo " --reliable-count $RELIABLE_COUNT")\` in $(( (SECONDS - t0) / 60 )) min $(( (SECONDS - t0) % 60 )) s (raw logs were in $RAW; one record per run in \`$(basename "$REL_RECORDS")\`)."
        echo
        echo "## Machine"
        echo
        echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) vCPU ($(grep -m1 -o 'hypervisor' /proc/cpuinfo >/dev/null && echo 'virtual machine' || echo 'bare metal'))"
        echo "- Memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo); kernel $(uname -r); $(. /etc/os-release && echo "$PRETTY_NAME")"
        echo "- udplab $(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null) ($UDPLAB); kcp crate $(grep -A1 '^name = "kcp"' "$REPO/Cargo.lock" | sed -n 's/version = "\(.*\)"/\1/p'); $(nft --version 2>/dev/null)"
        echo "- Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (the machine is shared with other jobs; no CPU pinning)"
    } > "$REL_MD"
    python3 "$TOOLS" reliable-report --records "$REL_RECORDS" --md "$REL_MD" --count "$RELIABLE_COUNT" \
        --fwd-seed "$REL_FWD_SEED" --rev-seed "$REL_REV_SEED"
    trap 'for p in $(jobs -p); do kill "$p" 2>/dev/null; done; echo "interrupted; raw logs in $RAW" >&2; exit 130' INT TERM
    log "reliable: wrote $REL_MD"
}
