#!/bin/bash
# One sandbox host's network: its own namespace, a veth pair, addresses, routes and a filter.
#
#   sbw-net.sh up NETNS VETH HOST_CIDR GATEWAY ROUTE_OUT(yes|no) PORTS(comma separated, may be empty) \
#       [SERVICE_ADDRESS SERVICE_PORTS]
#   sbw-net.sh down NETNS VETH
#   sbw-net.sh service-up SERVICE_ADDRESS     # the sandbox's "AWS service" address: a /32 on the root
#   sbw-net.sh service-down SERVICE_ADDRESS   # namespace's lo (no dummy interfaces in this kernel)
#
# `up` is idempotent and prints "changed" when it altered anything. The root-namespace end of the
# pair (VETH) carries GATEWAY; the namespace's end is `eth0` with HOST_CIDR. ROUTE_OUT=yes adds a
# default route via GATEWAY (public subnet); ROUTE_OUT=no leaves only the on-link route, so the host
# reaches nothing but its own /prefix (private subnet, no NAT). Either way an nftables table in the
# root namespace admits traffic from the host into the root namespace only to the gateway's PORTS
# (the sandbox's stand-ins for S3/SSM and the apt proxy), plus replies to connections made from the
# root side. SERVICE_ADDRESS (optional) is where the AWS APIs answer for every host and the controller
# alike: the host gets a route to that /32 via GATEWAY (the S3 gateway endpoint's prefix-list route on
# AWS: the private host still has no default route) and the filter admits it on SERVICE_PORTS.
set -euo pipefail

action=${1:?action}
changed=0
if [ "${action#service-}" = "$action" ]; then
    netns=${2:?netns}
    veth=${3:?veth}
    table="sbw_${veth//-/_}"
else
    address=${2:?service address}
fi

case $action in
up)
    cidr=${4:?host cidr} gateway=${5:?gateway} route_out=${6:?route_out} ports=${7:-}
    service=${8:-} service_ports=${9:-}
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
    if [ -n "$service" ] && ! ip -n "$netns" route show "$service/32" | grep -q "via $gateway"; then
        ip -n "$netns" route replace "$service/32" via "$gateway"
        changed=1
    fi
    # nft prints a set sorted and a single port bare: build each rule the way nft lists it back.
    port_rule() {  # port_rule DADDR PORTS
        local sorted
        sorted=$(tr ',' '\n' <<<"$2" | grep . | sort -n | paste -sd, - | sed 's/,/, /g' || true)
        case $sorted in
        "") ;;
        *,*) echo "iifname \"$veth\" ip daddr $1 tcp dport { $sorted } accept" ;;
        *) echo "iifname \"$veth\" ip daddr $1 tcp dport $sorted accept" ;;
        esac
    }
    rules=$(port_rule "$gateway" "$ports"; [ -z "$service" ] || port_rule "$service" "$service_ports")
    current=$(nft list table inet "$table" 2>/dev/null || true)
    stale=0
    while IFS= read -r rule; do
        [ -z "$rule" ] || grep -qF "$rule" <<<"$current" || stale=1
    done <<<"$rules"
    if [ -z "$current" ] || [ "$(grep -c 'dport' <<<"$current")" -ne "$(grep -c . <<<"$rules" || true)" ] || [ "$stale" = 1 ]; then
        [ -z "$current" ] || nft delete table inet "$table"
        nft -f - <<RULES
table inet $table {
    chain input {
        type filter hook input priority filter; policy accept;
        iifname "$veth" ct state established,related accept
$rules
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
service-up)
    if ! ip -br addr show dev lo | grep -qw "$address/32"; then
        ip addr add "$address/32" dev lo
        changed=1
    fi
    ;;
service-down)
    if ip -br addr show dev lo | grep -qw "$address/32"; then
        ip addr del "$address/32" dev lo
        changed=1
    fi
    ;;
*)
    echo "usage: $0 up|down|service-up|service-down ..." >&2
    exit 2
    ;;
esac
[ "$changed" -eq 0 ] || echo changed
