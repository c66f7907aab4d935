#!/usr/bin/env bash
# Run a command and report the wall time and the disk a directory takes: its peak while the command runs
# (sampled every 5 s) and what is kept afterwards. docs/images.md records `make test-containers`'s:
#
#   bench/disk_peak.sh /tmp/vrft-test-engine make test-containers
set -uo pipefail

dir=$1
shift
# -x: not into the overlay mounts of running containers, which show their image's layers a second time.
# du exits non-zero when a file vanishes while it counts (a build in progress): its total still stands.
sample() { du -sbx "$dir" 2>/dev/null | head -1 | cut -f1; }
peak_file=$(mktemp)
echo 0 >"$peak_file"
(
    while sleep 5; do
        now=$(sample)
        (( ${now:-0} > $(cat "$peak_file") )) && echo "$now" >"$peak_file"
    done
) &
sampler=$!
start=$SECONDS
"$@"
status=$?
kill "$sampler" 2>/dev/null
wait "$sampler" 2>/dev/null
kept=$(sample)
kept=${kept:-0}
peak=$(cat "$peak_file")
(( kept > peak )) && peak=$kept
rm -f "$peak_file"
gb() { awk -v b="${1:-0}" 'BEGIN { printf "%.1f GB", b / 1e9 }'; }
echo "disk_peak.sh: exit $status after $((SECONDS - start)) s; $dir: peak $(gb "$peak"), kept $(gb "$kept")"
exit "$status"
