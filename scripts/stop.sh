#!/usr/bin/env bash
# make stop: stop what scripts/serve.sh started, and only that: the process groups named by the pid
# files under .run/ (worker first, so no new flow run starts while the server goes away).
# A flow run in progress is not serve.sh's process: cancel it in the UI first, or it ends Crashed.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=$PWD/.run

group_alive() { kill -0 -- "-$1" 2>/dev/null; }

for name in prefect-worker mlflow prefect-server; do
    pidfile=$RUN/$name.pid
    [[ -f $pidfile ]] || continue
    pid=$(cat "$pidfile")
    # Linux does not reuse a pid while a process group of that id lives, so a live group "-pid" is
    # the one serve.sh made (its leader may have exited, leaving children to stop)
    if [[ $pid =~ ^[0-9]+$ ]] && group_alive "$pid"; then
        kill -TERM -- "-$pid"
        for _ in $(seq 1 30); do group_alive "$pid" || break; sleep 0.5; done
        if group_alive "$pid"; then kill -KILL -- "-$pid"; fi
        echo "stop: stopped $name (process group $pid)"
    else
        echo "stop: $name (pid $pid) was not running"
    fi
    rm -f "$pidfile"
done
rm -f "$RUN/prefect.env"
