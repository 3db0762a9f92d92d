#!/bin/bash
# Boot / power off one sandbox host: systemd-nspawn with systemd as PID 1 in the host's netns.
#
#   sbw-boot.sh start MACHINE ROOT_DIR NETNS PIDFILE LOGFILE [TIMEOUT_SECONDS] [BIND]
#       boots ROOT_DIR unless PIDFILE names a live guest, with BIND (SRC:DST, may be empty: a controller
#       directory bound at DST, the host's data volume, which outlives ROOT_DIR); waits until the guest's
#       systemd reports running (or degraded: the failed units are listed in LOGFILE); writes the guest's PID 1 as
#       seen from the host (the child of systemd-nspawn) to PIDFILE. Prints "started" or "running".
#   sbw-boot.sh stop MACHINE PIDFILE [TIMEOUT_SECONDS]
#       powers the guest off (SIGRTMIN+4 to its PID 1 = systemd's poweroff; RTMIN+3 would only
#       halt), waits for systemd-nspawn to exit (SIGKILL to nspawn after TIMEOUT), removes PIDFILE.
#       Prints "stopped" or "absent".
#
# The host has no systemd: no machinectl, no scopes (--register=no --keep-unit); use the PID with
# `nsenter --target PID --all` (Ansible: community.docker.nsenter, ansible_nsenter_pid).
set -euo pipefail

running() {  # running PID: the process exists and is not a zombie (this machine's PID 1 may not reap)
    [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

guest_alive() {  # guest_alive PIDFILE: the PID is alive and its parent is systemd-nspawn
    local pid ppid
    [ -s "$1" ] || return 1
    pid=$(head -n1 "$1")
    [[ $pid =~ ^[0-9]+$ ]] && running "$pid" || return 1
    ppid=$(awk '/^PPid:/ {print $2}' "/proc/$pid/status" 2>/dev/null) || return 1
    [ "$(cat "/proc/$ppid/comm" 2>/dev/null)" = systemd-nspawn ]
}

action=${1:?action}
machine=${2:?machine}
case $action in
start)
    root=${3:?root dir} netns=${4:?netns} pidfile=${5:?pidfile} logfile=${6:?logfile} timeout=${7:-180}
    binds=()
    [ -z "${8:-}" ] || binds=("--bind=$8")
    if guest_alive "$pidfile"; then
        echo running
        exit 0
    fi
    mkdir -p "$(dirname "$pidfile")" "$(dirname "$logfile")"
    rm -rf "/run/systemd/nspawn/propagate/$machine"
    setsid systemd-nspawn --boot --directory="$root" --machine="$machine" --hostname="$machine" \
        --network-namespace-path="/run/netns/$netns" --register=no --keep-unit \
        --console=passive --link-journal=no --resolv-conf=off --timezone=off "${binds[@]}" \
        >>"$logfile" 2>&1 </dev/null &
    nspawn=$!
    pid1=
    for _ in $(seq $((timeout * 10))); do
        running "$nspawn" || break
        pid1=$(pgrep -P "$nspawn" | head -n1 || true)
        [ -z "$pid1" ] || [ "$(cat "/proc/$pid1/comm" 2>/dev/null)" != systemd ] || break
        pid1=
        sleep 0.1
    done
    if [ -z "$pid1" ]; then
        echo "systemd-nspawn for $machine did not start a guest; its log:" >&2
        tail -n 30 "$logfile" >&2
        kill -KILL "$nspawn" 2>/dev/null || true
        exit 1
    fi
    # PID 1 answers on its private bus only once it has set itself up: wait for the socket first.
    for _ in $(seq $((timeout * 10))); do
        [ ! -S "/proc/$pid1/root/run/systemd/private" ] || break
        running "$pid1" || break
        sleep 0.1
    done
    state=$(timeout "$timeout" nsenter --target "$pid1" --all systemctl is-system-running --wait 2>&1 || true)
    case $state in
    running) ;;
    degraded)
        { echo "[$machine] systemd degraded; failed units:"
          nsenter --target "$pid1" --all systemctl --failed --no-legend || true; } >>"$logfile" 2>&1
        ;;
    *)
        echo "guest $machine did not finish booting (state: $state); its log:" >&2
        tail -n 30 "$logfile" >&2
        kill -s SIGRTMIN+4 "$pid1" 2>/dev/null || true
        exit 1
        ;;
    esac
    echo "$pid1" >"$pidfile.tmp"
    mv "$pidfile.tmp" "$pidfile"
    echo started
    ;;
stop)
    pidfile=${3:?pidfile} timeout=${4:-60}
    if ! guest_alive "$pidfile"; then
        rm -f "$pidfile"
        rm -rf "/run/systemd/nspawn/propagate/$machine"
        echo absent
        exit 0
    fi
    pid1=$(head -n1 "$pidfile")
    nspawn=$(awk '/^PPid:/ {print $2}' "/proc/$pid1/status")
    kill -s SIGRTMIN+4 "$pid1"
    for _ in $(seq $((timeout * 10))); do
        running "$nspawn" || break
        sleep 0.1
    done
    if running "$nspawn"; then
        echo "guest $machine did not power off within ${timeout}s: killing systemd-nspawn $nspawn" >&2
        kill -KILL "$nspawn" 2>/dev/null || true
        sleep 1
    fi
    rm -f "$pidfile"
    rm -rf "/run/systemd/nspawn/propagate/$machine"
    echo stopped
    ;;
*)
    echo "usage: $0 start|stop MACHINE ..." >&2
    exit 2
    ;;
esac
