#!/usr/bin/env bash
# Interoperability of peerchannel's mDNS / DNS-SD records with Avahi, both ways:
#
#   1. `avahi-browse -rpt _peerchannel._udp` lists a `peerchannel chat --discovery mdns` node,
#      with its mesh id in the TXT record;
#   2. a service published with `avahi-publish` is found by peerchannel: `peerchannel browse`
#      lists it, and a `peerchannel chat --discovery mdns` node connects to the node it names
#      (a node that does not advertise itself) and they chat.
#
# Installs avahi-daemon and avahi-utils from Debian's packages if missing (without starting
# the system's daemon), then runs everything in namespaces of its own (user, network, mount:
# `unshare -rnm`, no root needed there): only loopback and a virtual interface leading nowhere
# (Avahi ignores loopback), a private /run, a private D-Bus system bus and a private avahi-daemon. Nothing
# reaches the host's network or its daemons. Every process started is stopped by its pid.
#
# Usage: scripts/avahi-interop.sh [path/to/peerchannel]   (default: target/debug/peerchannel,
# built if missing). Exits non-zero, with the logs, when a check fails.
set -euo pipefail

# How long each check may take.
DEADLINE_S=30
# The network of the virtual interface inside the namespace.
VNET=10.77.0
MESH=interop-mesh

log() { printf '[avahi-interop] %s\n' "$*" >&2; }

if [[ -z "${PEERCHANNEL_INTEROP_INSIDE:-}" ]]; then
    cd "$(dirname "$0")/.."
    bin="${1:-${CARGO_TARGET_DIR:-$PWD/target}/debug/peerchannel}"
    if [[ ! -x "$bin" ]]; then
        log "building peerchannel"
        cargo build -p peerchannel-cli --locked
    fi
    bin="$(realpath "$bin")"

    missing=()
    for tool in avahi-daemon:avahi-daemon avahi-browse:avahi-utils avahi-publish:avahi-utils \
        dbus-daemon:dbus unshare:util-linux ip:iproute2; do
        package="${tool#*:}"
        if ! command -v "${tool%%:*}" >/dev/null 2>&1 && [[ " ${missing[*]} " != *" $package "* ]]; then
            missing+=("$package")
        fi
    done
    if ((${#missing[@]})); then
        sudo=()
        if [[ $(id -u) -ne 0 ]]; then
            command -v sudo >/dev/null || { log "need root or sudo to install: ${missing[*]}"; exit 1; }
            sudo=(sudo)
        fi
        # Debian's postinst scripts would start the system's avahi-daemon; a policy-rc.d that
        # says "no" keeps it stopped (one is already there in most containers).
        added_policy=""
        if [[ ! -e /usr/sbin/policy-rc.d ]]; then
            printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee /usr/sbin/policy-rc.d >/dev/null
            "${sudo[@]}" chmod +x /usr/sbin/policy-rc.d
            added_policy=1
        fi
        log "installing ${missing[*]}"
        "${sudo[@]}" apt-get update -qq
        status=0
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null || status=$?
        if [[ -n "$added_policy" ]]; then
            "${sudo[@]}" rm -f /usr/sbin/policy-rc.d
        fi
        ((status == 0)) || { log "apt-get install failed"; exit "$status"; }
    fi

    log "entering namespaces of our own (unshare -rnm)"
    exec unshare --user --map-root-user --net --mount -- \
        env PEERCHANNEL_INTEROP_INSIDE=1 "$0" "$bin"
fi

# --- inside the namespaces ------------------------------------------------------------------

bin="$1"
work="$(mktemp -d)"
pids=()
# Every process this script starts is stopped by its pid, youngest first.
cleanup() {
    local status=$?
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill "${pids[i]}" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if ((status != 0)); then
        for f in "$work"/*.log; do
            [[ -e "$f" ]] || continue
            log "---- ${f##*/}"
            tail -n 40 "$f" >&2 || true
        done
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT

# Waits until "$@" succeeds, at most DEADLINE_S seconds.
until_ok() {
    local what="$1"
    shift
    local until=$((SECONDS + DEADLINE_S))
    until "$@"; do
        if ((SECONDS >= until)); then
            log "FAILED: $what (not within ${DEADLINE_S} s)"
            return 1
        fi
        sleep 0.5
    done
}

# The network: loopback, and a pair of virtual Ethernet interfaces for Avahi (it never uses
# loopback), or a dummy interface where veth is missing. Multicast sent on pc0 loops back to
# every listener in this namespace, which is all that is needed; pc1 leads nowhere.
ip link set lo up
if ip link add pc0 type veth peer name pc1 2>/dev/null; then
    ip link set pc1 up
else
    ip link add pc0 type dummy
fi
ip addr add "$VNET.1/24" dev pc0
ip link set pc0 up multicast on
ip route add 224.0.0.0/4 dev pc0

# A private /run: Avahi's pid file and socket, and the D-Bus system bus socket.
mount -t tmpfs tmpfs /run
mkdir -p /run/dbus

# avahi-daemon insists that its runtime directory belong to the user `avahi`, but only root
# exists in this user namespace: here, and only here, `avahi` is root (it does not drop
# privileges either: --no-drop-root).
{ grep -v '^avahi:' /etc/passwd; echo 'avahi:x:0:0:avahi:/run/avahi-daemon:/usr/sbin/nologin'; } \
    >"$work/passwd"
{ grep -v '^avahi:' /etc/group; echo 'avahi:x:0:'; } >"$work/group"
mount --bind "$work/passwd" /etc/passwd
mount --bind "$work/group" /etc/group

cat >"$work/dbus.conf" <<'EOF'
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
EOF
dbus-daemon --config-file="$work/dbus.conf" --nofork --nopidfile >"$work/dbus.log" 2>&1 &
pids+=($!)
until_ok "the private D-Bus" test -S /run/dbus/system_bus_socket

cat >"$work/avahi.conf" <<EOF
[server]
host-name=pc-interop
use-ipv4=yes
use-ipv6=no
allow-interfaces=pc0
enable-dbus=yes
disallow-other-stacks=no
ratelimit-interval-usec=0
[wide-area]
enable-wide-area=no
[publish]
publish-hinfo=no
publish-workstation=no
EOF
avahi-daemon -f "$work/avahi.conf" --no-drop-root --no-chroot --no-rlimits --no-proc-title \
    >"$work/avahi-daemon.log" 2>&1 &
pids+=($!)
until_ok "avahi-daemon running" grep -q "Server startup complete" "$work/avahi-daemon.log"

# Keeps a chat's stdin open (and empty) for as long as this script runs.
mkfifo "$work/stdin"
exec 3<>"$work/stdin"

# --- 1. Avahi sees a peerchannel node ---------------------------------------------------------

"$bin" chat --discovery mdns --mesh "$MESH" --nick advertised <"$work/stdin" \
    >"$work/advertised.log" 2>&1 &
pids+=($!)

avahi_lists_node() {
    timeout 10 avahi-browse -rpt _peerchannel._udp >"$work/avahi-browse.log" 2>&1 || true
    grep -E "^=;pc0;IPv4;[^;]+;_peerchannel\._udp;local;[^;]+;$VNET\.1;[0-9]+;" \
        "$work/avahi-browse.log" | grep -F "\"m=$MESH\"" | grep -qE "\"id=[a-z2-7]{52}\""
}
until_ok "avahi-browse lists the peerchannel node with its mesh id" avahi_lists_node
log "ok: avahi-browse lists the peerchannel node: $(grep -m1 "m=$MESH" "$work/avahi-browse.log")"

# --- 2. peerchannel finds a service published with avahi-publish -----------------------------

# A node that listens on a known port and does not advertise itself: it can only be found
# through the record Avahi publishes for it.
id="$("$bin" identity new --out "$work/hidden.key")"
port=47000
"$bin" chat --discovery static --peer 127.0.0.1:9 --mesh "$MESH" --nick hidden \
    --identity "$work/hidden.key" --listen "$VNET.1:$port" <"$work/stdin" \
    >"$work/hidden.log" 2>&1 &
pids+=($!)
avahi-publish -s "avahi-published" _peerchannel._udp "$port" "v=1" "m=$MESH" "id=$id" \
    >"$work/avahi-publish.log" 2>&1 &
pids+=($!)

peerchannel_lists_avahi_record() {
    "$bin" browse --once --mesh "$MESH" >"$work/browse.log" 2>&1 || true
    # Avahi also publishes its IPv6 link-local address: other addresses may follow.
    grep -qE "^$MESH $id $VNET\.1:$port(,|$)" "$work/browse.log"
}
until_ok "peerchannel browse lists the avahi-published instance" peerchannel_lists_avahi_record
log "ok: peerchannel browse lists the avahi-published instance: $(grep -m1 "$id" "$work/browse.log")"

# A peerchannel node finds the hidden node through Avahi's record, and they talk.
mkfifo "$work/finder-stdin"
exec 4<>"$work/finder-stdin"
"$bin" chat --discovery mdns --mesh "$MESH" --nick finder <"$work/finder-stdin" \
    >"$work/finder.log" 2>&1 &
pids+=($!)
until_ok "the finder meets the hidden node" grep -qx "\* hidden joined" "$work/finder.log"
echo "hello through avahi" >&4
until_ok "the hidden node hears the finder" grep -qx "finder: hello through avahi" "$work/hidden.log"
log "ok: a peerchannel node found a node published with avahi-publish and they chatted"
log "all interoperability checks passed"
