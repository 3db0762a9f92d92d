#!/bin/bash
# One sandbox host's network: its own namespace, a veth pair, addresses, routes and a filter.
#
#   sbw-net.sh up NETNS VETH HOST_CIDR GATEWAY ROUTE_OUT(yes|no) PORTS(comma separated, may be empty)
#   sbw-net.sh down NETNS VETH
#
# `up` is idempotent and prints "changed" when it altered anything. The root-namespace end of the
# pair (VETH) carries GATEWAY; the namespace's end is `eth0` with HOST_CIDR. ROUTE_OUT=yes adds a
# default route via GATEWAY (public subnet); ROUTE_OUT=no leaves only the on-link route, so the host
# reaches nothing but its own /prefix (private subnet, no NAT). Either way an nftables table in the
# root namespace admits traffic from the host into the root namespace only to the gateway's PORTS
# (the sandbox's stand-ins for S3/SSM and the apt proxy), plus replies to connections made from the
# root side.
set -euo pipefail

action=${1:?action}
netns=${2:?netns}
veth=${3:?veth}
table="sbw_${veth//-/_}"
changed=0

case $action in
up)
    cidr=${4:?host cidr} gateway=${5:?gateway} route_out=${6:?route_out} ports=${7:-}
    prefix=${cidr#*/}
    if [ ! -e "/run/netns/$netns" ]; then
        ip netns add "$netns"
        changed=1
    fi
    if ! ip link show "$veth" >/dev/null 2>&1; then
        ip link add "$veth" type veth peer name eth0 netns "$netns"
        changed=1
    fi
    if ! ip -br addr show dev "$veth" | grep -qw "$gateway/$prefix"; then
        ip addr add "$gateway/$prefix" dev "$veth"
        changed=1
    fi
    if ! ip -n "$netns" -br addr show dev eth0 | grep -qw "$cidr"; then
        ip -n "$netns" addr add "$cidr" dev eth0
        changed=1
    fi
    if ! ip link show dev "$veth" | grep -q '[<,]UP[,>]'; then
        ip link set "$veth" up
        changed=1
    fi
    for link in lo eth0; do
        if ! ip -n "$netns" link show dev "$link" | grep -q '[<,]UP[,>]'; then
            ip -n "$netns" link set "$link" up
            changed=1
        fi
    done
    have_default=$(ip -n "$netns" route show default)
    if [ "$route_out" = yes ] && [ -z "$have_default" ]; then
        ip -n "$netns" route add default via "$gateway"
        changed=1
    elif [ "$route_out" != yes ] && [ -n "$have_default" ]; then
        ip -n "$netns" route del default
        changed=1
    fi
    # nft prints a set sorted and a single port bare: build the rule the way nft lists it back.
    sorted_ports=$(tr ',' '\n' <<<"$ports" | grep . | sort -n | paste -sd, - | sed 's/,/, /g' || true)
    case $sorted_ports in
    "") port_rule="" ;;
    *,*) port_rule="iifname \"$veth\" ip daddr $gateway tcp dport { $sorted_ports } accept" ;;
    *) port_rule="iifname \"$veth\" ip daddr $gateway tcp dport $sorted_ports accept" ;;
    esac
    current=$(nft list table inet "$table" 2>/dev/null || true)
    if [ -z "$current" ] || [ "$(grep -c 'dport' <<<"$current")" -ne "$([ -n "$port_rule" ] && echo 1 || echo 0)" ] ||
        { [ -n "$port_rule" ] && ! grep -qF "$port_rule" <<<"$current"; }; then
        [ -z "$current" ] || nft delete table inet "$table"
        nft -f - <<RULES
table inet $table {
    chain input {
        type filter hook input priority filter; policy accept;
        iifname "$veth" ct state established,related accept
        $port_rule
        iifname "$veth" drop
    }
}
RULES
        changed=1
    fi
    ;;
down)
    if nft list table inet "$table" >/dev/null 2>&1; then
        nft delete table inet "$table"
        changed=1
    fi
    if ip link show "$veth" >/dev/null 2>&1; then
        ip link del "$veth"
        changed=1
    fi
    if [ -e "/run/netns/$netns" ]; then
        ip netns del "$netns"
        changed=1
    fi
    ;;
*)
    echo "usage: $0 up|down NETNS VETH ..." >&2
    exit 2
    ;;
esac
[ "$changed" -eq 0 ] || echo changed
