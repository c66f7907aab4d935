#!/usr/bin/env bash
# Start, stop or remove a private Docker engine for local builds and `vrft run --runner docker`, on a
# machine with no docker service: no iptables, no bridge (containers use the host network), its own data
# root, exec root, socket and pidfile under ENGINE_DIR. overlay2 first, vfs when overlay2 cannot mount.
#
#   docker/engine.sh start  [ENGINE_DIR]   # prints DOCKER_HOST=unix://ENGINE_DIR/docker.sock
#   docker/engine.sh stop   [ENGINE_DIR]   # stops it: no process, mount, socket or exec root is left,
#                                          # only ENGINE_DIR/data (images, layers: reused) and the logs
#   docker/engine.sh remove [ENGINE_DIR]   # stops it and deletes ENGINE_DIR (`make clean-containers`)
set -euo pipefail

action=${1:-start}
dir=${2:-${VRFT_ENGINE_DIR:-/tmp/vrft-docker}}
dir=${dir%/}
sock="unix://${dir}/docker.sock"
pidfile="${dir}/dockerd.pid"
# dockerd starts its own containerd; its pidfile lies in the exec root.
containerd_pidfile="${dir}/exec/containerd/containerd.pid"

alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
running() { alive "$pidfile"; }

# Stop the process of a pidfile: TERM, then KILL after $2 seconds.
stop_process() {
    local pidfile=$1 wait_s=$2 pid
    alive "$pidfile" || return 0
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq "$wait_s"); do kill -0 "$pid" 2>/dev/null || return 0; sleep 1; done
    kill -KILL "$pid" 2>/dev/null || true
    sleep 1
}

# Mount points under ENGINE_DIR (the network namespace dockerd keeps in exec/netns, containers'
# overlay mounts), deepest first.
mounts_under() {
    awk -v prefix="${dir}/" 'index($2, prefix) == 1 { print $2 }' /proc/self/mounts | sort -r
}

stop() {
    stop_process "$pidfile" 60
    stop_process "$containerd_pidfile" 15  # only left when dockerd itself was killed
    local mount
    while read -r mount; do
        [[ -n $mount ]] && { umount "$mount" 2>/dev/null || umount -l "$mount" 2>/dev/null || true; }
    done < <(mounts_under)
    rm -rf "${dir}/exec" "${dir}/docker.sock" "$pidfile"
    if [[ -n $(mounts_under) ]]; then
        echo "engine.sh: still mounted under ${dir}: $(mounts_under | tr '\n' ' ')" >&2
        return 1
    fi
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
    mkdir -p "${dir}/data" "${dir}/exec" "${dir}/logs"
    dockerd --iptables=false --ip6tables=false --bridge=none --storage-driver="$driver" \
        --data-root="${dir}/data" --exec-root="${dir}/exec" --pidfile="$pidfile" -H "$sock" \
        >"${dir}/logs/dockerd-${driver}.log" 2>&1 &
    ready $!
}

case $action in
start)
    if running; then echo "DOCKER_HOST=$sock"; exit 0; fi
    command -v dockerd >/dev/null || { echo "engine.sh: no dockerd (apt-get install docker.io)" >&2; exit 1; }
    command -v docker >/dev/null || { echo "engine.sh: no docker CLI (apt-get install docker.io)" >&2; exit 1; }
    [[ $(id -u) == 0 ]] || { echo "engine.sh: dockerd needs root" >&2; exit 1; }
    stop  # what a killed engine left behind (its exec root, mounts) would stop a new one
    if ! start_with overlay2; then
        stop
        rm -rf "${dir}/data"
        start_with vfs || { echo "engine.sh: dockerd did not start: see ${dir}/logs/dockerd-vfs.log" >&2; stop; exit 1; }
    fi
    echo "DOCKER_HOST=$sock"
    ;;
stop) stop ;;
remove)
    [[ -e $dir ]] || exit 0
    # Only a directory this script made: never a home or / by a mistyped argument.
    if [[ -z $dir || $dir == / || ! ( -d ${dir}/data || -d ${dir}/logs || -f $pidfile ) ]]; then
        echo "engine.sh: ${dir:-/} does not look like an engine directory (no data/ or logs/): not removed" >&2
        exit 1
    fi
    stop
    rm -rf "$dir"
    ;;
*) echo "usage: engine.sh start|stop|remove [ENGINE_DIR]" >&2; exit 2 ;;
esac
