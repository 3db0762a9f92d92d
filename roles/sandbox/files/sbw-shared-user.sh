#!/bin/bash
# Join or leave a daemon that every sandbox and molecule host on this machine shares (the apt proxy),
# atomically: joining and leaving both hold RUN_DIR.lock (beside RUN_DIR, which leaving may remove),
# so a sandbox that joins while the last other user leaves never loses its run directory or its daemon.
#
#   sbw-shared-user.sh join RUN_DIR USER           leaves the token RUN_DIR/users/USER; prints "joined"
#                                                  or "present"
#   sbw-shared-user.sh leave RUN_DIR USER PIDFILE  removes the token; when no token is left, stops the
#                                                  daemon by PIDFILE (sbw-daemon.sh) and removes RUN_DIR;
#                                                  prints "left" (others remain), "last", or "absent"
#                                                  (no token of USER and others remain, or no RUN_DIR)
set -euo pipefail

action=${1:?action}
run_dir=${2:?run dir}
user=${3:?user}
case $user in */* | . | .. | "") echo "bad user name: $user" >&2; exit 2 ;; esac

exec 9>"$run_dir.lock"
flock 9

case $action in
join)
    mkdir -p "$run_dir/users"
    if [ -e "$run_dir/users/$user" ]; then
        echo present
    else
        echo "$user" >"$run_dir/users/$user"
        echo joined
    fi
    ;;
leave)
    pidfile=${4:?pidfile}
    if [ ! -d "$run_dir" ]; then
        echo absent
        exit 0
    fi
    joined=no
    if [ -e "$run_dir/users/$user" ]; then
        rm -f "$run_dir/users/$user"
        joined=yes
    fi
    if [ -n "$(ls -A "$run_dir/users" 2>/dev/null)" ]; then
        [ $joined = yes ] && echo left || echo absent  # others remain; "absent": this user had left already
        exit 0
    fi
    "$(dirname "${BASH_SOURCE[0]}")/sbw-daemon.sh" stop "$pidfile" >/dev/null
    rm -rf "$run_dir"
    echo last
    ;;
*)
    echo "usage: $0 join RUN_DIR USER | leave RUN_DIR USER PIDFILE" >&2
    exit 2
    ;;
esac
