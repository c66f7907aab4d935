#!/usr/bin/env bash
# Start (or stop) a private Docker engine for local builds and `vrft run --runner docker`, on a machine
# with no docker service: no iptables, no bridge (containers use the host network), its own data root,
# exec root, socket and pidfile under ENGINE_DIR. overlay2 first, vfs when overlay2 cannot mount.
#
#   docker/engine.sh start [ENGINE_DIR]   # prints DOCKER_HOST=unix://ENGINE_DIR/docker.sock
#   docker/engine.sh stop  [ENGINE_DIR]   # stops the engine started here (by its pidfile)
set -euo pipefail

action=${1:-start}
dir=${2:-${VRFT_ENGINE_DIR:-/tmp/vrft-docker}}
sock="unix://${dir}/docker.sock"
pidfile="${dir}/dockerd.pid"

running() { [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

stop() {
    if running; then
        pid=$(cat "$pidfile")
        kill "$pid"
        for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    fi
    rm -f "$pidfile"
    # dockerd leaves its network namespace mounted; unmounted, the directory can be deleted.
    for ns in "${dir}"/exec/netns/*; do [[ -e $ns ]] && umount "$ns" 2>/dev/null || true; done
}

ready() {
    local pid=$1
    for _ in $(seq 60); do
        kill -0 "$pid" 2>/dev/null || return 1
        DOCKER_HOST=$sock docker version >/dev/null 2>&1 && return 0
        sleep 1
    done
    return 1
}

start_with() {
    local driver=$1
    mkdir -p "${dir}/data" "${dir}/exec"
    dockerd --iptables=false --ip6tables=false --bridge=none --storage-driver="$driver" \
        --data-root="${dir}/data" --exec-root="${dir}/exec" --pidfile="$pidfile" -H "$sock" \
        >"${dir}/dockerd-${driver}.log" 2>&1 &
    ready $!
}

case $action in
start)
    if running; then echo "DOCKER_HOST=$sock"; exit 0; fi
    command -v dockerd >/dev/null || { echo "engine.sh: no dockerd (apt-get install docker.io)" >&2; exit 1; }
    [[ $(id -u) == 0 ]] || { echo "engine.sh: dockerd needs root" >&2; exit 1; }
    if ! start_with overlay2; then
        stop
        sleep 1
        rm -rf "${dir}/data"
        start_with vfs || { echo "engine.sh: dockerd did not start: see ${dir}/dockerd-vfs.log" >&2; stop; exit 1; }
    fi
    echo "DOCKER_HOST=$sock"
    ;;
stop) stop ;;
*) echo "usage: engine.sh start|stop [ENGINE_DIR]" >&2; exit 2 ;;
esac
