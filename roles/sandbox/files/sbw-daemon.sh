#!/bin/bash
# Start / stop / query one background daemon of the sandbox (moto, apt proxy, gateway forwarders)
# by PID file. The host has no systemd, so the sandbox supervises its daemons itself.
#
#   sbw-daemon.sh start PIDFILE LOGFILE CMD [ARGS...]   prints "started" or "running"
#   sbw-daemon.sh stop PIDFILE [TIMEOUT_SECONDS]         prints "stopped" or "absent"
#   sbw-daemon.sh status PIDFILE                         exit 0 when running
#
# A PID file whose process is gone (or is another program now) counts as absent. `stop` only ever
# signals the PID in its own file: never a process found by name.
set -euo pipefail

running() {  # running PID: the process exists and is not a zombie (this machine's PID 1 may not reap)
    [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

alive() {  # alive PIDFILE: the recorded process exists and still runs the recorded command
    local pid
    [ -s "$1" ] || return 1
    pid=$(head -n1 "$1")
    [[ $pid =~ ^[0-9]+$ ]] && running "$pid" || return 1
    # Guard against PID reuse: the command line recorded at start must match.
    # (cmp would trust the size /proc reports, 0: compare the contents instead.)
    [ ! -s "$1.cmd" ] || [ "$(tr '\0' ' ' <"$1.cmd")" = "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" ]
}

action=${1:?action}
pidfile=${2:?pidfile}
if [ "$action" != start ] && [ ! -d "$(dirname "$pidfile")" ]; then
    [ "$action" = stop ] && echo absent
    [ "$action" = stop ]  # status: not running (exit 1); stop: nothing to do
    exit
fi
mkdir -p "$(dirname "$pidfile")"
# Concurrent callers for the same daemon (e.g. two users of the shared apt proxy) take turns.
if [ "$action" != status ]; then
    exec 8>"$pidfile.lock"
    flock 8
fi
case $action in
start)
    logfile=${3:?logfile}
    shift 3
    if alive "$pidfile"; then
        echo running
        exit 0
    fi
    mkdir -p "$(dirname "$logfile")"
    setsid "$@" >>"$logfile" 2>&1 </dev/null 8>&- &
    pid=$!
    echo "$pid" >"$pidfile"
    # Record the command line once exec has happened, for the PID-reuse guard above.
    for _ in $(seq 50); do
        if [ "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" = "$* " ]; then
            cat "/proc/$pid/cmdline" >"$pidfile.cmd"
            break
        fi
        sleep 0.1
    done
    if ! running "$pid"; then
        echo "daemon exited at once: $*" >&2
        tail -n 20 "$logfile" >&2
        rm -f "$pidfile" "$pidfile.cmd"
        exit 1
    fi
    echo started
    ;;
stop)
    timeout=${3:-20}
    if ! alive "$pidfile"; then
        rm -f "$pidfile" "$pidfile.cmd" "$pidfile.lock"
        echo absent
        exit 0
    fi
    pid=$(head -n1 "$pidfile")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq $((timeout * 10))); do
        running "$pid" || break
        sleep 0.1
    done
    if running "$pid"; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile" "$pidfile.cmd" "$pidfile.lock"
    echo stopped
    ;;
status)
    alive "$pidfile"
    ;;
*)
    echo "usage: $0 start|stop|status PIDFILE ..." >&2
    exit 2
    ;;
esac
