#!/usr/bin/env bash
# berth-route ADD beside Debian's sbr ADD on the same pod shape, with hyperfine.
#
# The pod: eth0 (macvlan on ens192, 10.6.168.172/16) already wired by berth-route (veth0
# exists), net1 (macvlan on ens224, 10.7.168.173/16, default via 10.7.0.1 in main) as the
# main plugin leaves it. Measured: one ADD for net1 with that prevResult —
#   sbr:         rule `from 10.7.168.173 lookup 100`, net1's routes moved to table 100;
#   berth-route: table 100 (4 routes), 2 rules, net1's default out of main, node route and
#                neighbour, the pod's rp_filter.
# Before every run, --prepare puts the pod back as the main plugin left it. Both plugins
# run through the same `ip netns exec <node>` wrapper; `ip netns exec <node> true` is
# measured too, so the wrapper's cost can be subtracted.
#
# Everything lives in namespaces made here and deleted on exit. Needs root, hyperfine,
# Debian's containernetworking-plugins and a release build:
#   cargo build --release -p netns-routing --bin berth-route
#   crates/netns-routing/scripts/bench-add-vs-sbr.sh [target/release/berth-route]
set -euo pipefail

ROUTE=${1:-target/release/berth-route}
ROUTE=$(realpath "$ROUTE")
SBR=/usr/lib/cni/sbr
MACVLAN=/usr/lib/cni/macvlan
S=$$
NODE=bench-node-$S POD=bench-pod-$S GW=bench-gw-$S
WORK=$(mktemp -d /tmp/berth-bench.XXXXXX)
cleanup() {
    for n in $POD $NODE $GW; do ip netns del "$n" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

for n in $NODE $POD $GW; do ip netns add "$n"; done
ip -n "$NODE" link add ens192 type veth peer name lan192 netns "$GW"
ip -n "$NODE" link add ens224 type veth peer name lan224 netns "$GW"
ip -n "$NODE" addr add 10.6.168.123/16 dev ens192
ip -n "$NODE" addr add 10.7.168.123/16 dev ens224
ip -n "$GW" addr add 10.6.0.1/16 dev lan192
ip -n "$GW" addr add 10.7.0.1/16 dev lan224
for l in ens192 ens224; do ip -n "$NODE" link set "$l" up; done
for l in lan192 lan224; do ip -n "$GW" link set "$l" up; done

mkdir -p "$WORK/bin"
ln -s "$ROUTE" "$WORK/bin/veth"
CNI_PATH="$WORK/bin:/usr/lib/cni"
LOG="$WORK/berth-route.log"

# Runs a plugin like a runtime on the node: plugin, command, ifname, stdin file.
plugin() {
    ip netns exec "$NODE" env -i CNI_COMMAND="$2" CNI_CONTAINERID=benchpod0000000001 \
        CNI_NETNS=/var/run/netns/$POD CNI_IFNAME="$3" CNI_PATH="$CNI_PATH" "$1" <"$4"
}

nic() { # ifname master address gateway
    cat >"$WORK/$1.macvlan.json" <<EOF
{"cniVersion":"0.3.1","name":"net-$1","type":"macvlan","master":"$2","mode":"bridge",
 "ipam":{"type":"static","addresses":[{"address":"$3","gateway":"$4"}],
         "routes":[{"dst":"0.0.0.0/0","gw":"$4"}]}}
EOF
    plugin $MACVLAN ADD "$1" "$WORK/$1.macvlan.json" >"$WORK/$1.result.json"
}
nic eth0 ens192 10.6.168.172/16 10.6.0.1
nic net1 ens224 10.7.168.173/16 10.7.0.1

python3 - "$WORK" "$LOG" <<'EOF'
import json, sys
work, log = sys.argv[1], sys.argv[2]
for nic in ["eth0", "net1"]:
    prev = json.load(open(f"{work}/{nic}.result.json"))
    veth = {"cniVersion": "0.3.1", "name": f"net-{nic}", "type": "veth",
            "service_cidr": ["10.96.0.0/12"],
            "log_options": {"log_file": log, "log_level": "info"}, "prevResult": prev}
    json.dump(veth, open(f"{work}/{nic}.veth.json", "w"))
    sbr = {"cniVersion": "0.3.1", "name": f"net-{nic}", "type": "sbr", "prevResult": prev}
    json.dump(sbr, open(f"{work}/{nic}.sbr.json", "w"))
EOF
plugin "$WORK/bin/veth" ADD eth0 "$WORK/eth0.veth.json" >/dev/null

# The pod as macvlan left net1: no rule, table 100 empty, net1's routes in main.
cat >"$WORK/reset.sh" <<EOF
#!/bin/sh
while ip -n $POD rule del lookup 100 2>/dev/null; do :; done
ip -n $POD route flush table 100
ip -n $POD route replace 10.7.0.0/16 dev net1 proto kernel scope link src 10.7.168.173
ip -n $POD route del default via 10.7.0.1 dev net1 2>/dev/null || true
ip -n $POD route append default via 10.7.0.1 dev net1
ip -n $NODE route del 10.7.168.173 2>/dev/null || true
EOF
chmod +x "$WORK/reset.sh"
"$WORK/reset.sh"

# Sanity: each plugin succeeds on the reset pod.
for p in sbr veth; do
    bin=$SBR; [ $p = veth ] && bin=$WORK/bin/veth
    plugin "$bin" ADD net1 "$WORK/net1.$p.json" >/dev/null
    "$WORK/reset.sh"
done

# One script per command, so all three pay the same shell and `ip netns exec` start-up.
run_script() { # name plugin stdin
    cat >"$WORK/run-$1.sh" <<EOF
exec ip netns exec $NODE env -i CNI_COMMAND=ADD CNI_CONTAINERID=benchpod0000000001 \\
    CNI_NETNS=/var/run/netns/$POD CNI_IFNAME=net1 CNI_PATH=$CNI_PATH $2 <$3 >/dev/null
EOF
}
run_script sbr "$SBR" "$WORK/net1.sbr.json"
run_script route "$WORK/bin/veth" "$WORK/net1.veth.json"
echo "exec ip netns exec $NODE true" >"$WORK/run-baseline.sh"

# hyperfine runs the commands one after the other, not interleaved: on a loaded machine run
# it twice, REVERSE=1 the second time, and compare.
commands=(-n "ip netns exec (baseline)" "sh $WORK/run-baseline.sh"
    -n "sbr ADD" "sh $WORK/run-sbr.sh"
    -n "berth-route ADD" "sh $WORK/run-route.sh")
if [ -n "${REVERSE:-}" ]; then
    commands=(-n "berth-route ADD" "sh $WORK/run-route.sh"
        -n "sbr ADD" "sh $WORK/run-sbr.sh"
        -n "ip netns exec (baseline)" "sh $WORK/run-baseline.sh")
fi
hyperfine -N --warmup 5 --runs "${RUNS:-200}" --prepare "$WORK/reset.sh" \
    --export-json "${EXPORT:-$WORK/bench.json}" "${commands[@]}"
