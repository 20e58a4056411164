#!/usr/bin/env bash
# A long run of the seeded fleet search on the simulator: N seeds from START (default 0), in an
# optimised build, on every core (REGISTRY_FLEET_THREADS=<n> to use fewer). Each seed runs the
# mode it draws (safety or liveness), exactly as CI and a replay run it. Lists every failing seed
# with the command that replays it, and the wall time; the whole output is kept in
# target/sweep-START-END.log. Exits non-zero when a seed failed.
#
#   bash scripts/sweep.sh 100000        # seeds 0..100000
#   bash scripts/sweep.sh 20000 500000  # seeds 500000..520000
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

usage="usage: scripts/sweep.sh N [START]"
n="${1:?$usage}"
start="${2:-0}"
if ! [[ "$n" =~ ^[0-9]+$ && "$start" =~ ^[0-9]+$ ]]; then
  echo "$usage (N and START are seed numbers)" >&2
  exit 2
fi
end=$((start + n))
threads="${REGISTRY_FLEET_THREADS:-$(nproc)}"
log="target/sweep-$start-$end.log"

echo "== building the fleet search (optimised)" >&2
cargo test --release -p registry-memory --test fleet --no-run

echo "== sweeping seeds $start..$end on $threads threads" >&2
began="$(date +%s%N)"
set +e
env -u REGISTRY_SEED -u REGISTRY_FLEET_SEED -u REGISTRY_FLEET_COMMIT \
  REGISTRY_FLEET_SEEDS="$start..$end" REGISTRY_FLEET_WINDOW=none REGISTRY_FLEET_THREADS="$threads" \
  cargo test --release -p registry-memory --test fleet -- --exact fleet_search --nocapture \
  >"$log" 2>&1
status=$?
set -e
wall_ms=$((($(date +%s%N) - began) / 1000000))

grep -E '^fleet (seeds|search):|^liveness:' "$log" || true
failing="$(grep -cE '^fleet seed [0-9]+ failed' "$log" || true)"
if [ "$failing" -gt 0 ]; then
  # Each failing seed with its first violation and its replay command.
  echo "failing seeds ($failing):"
  awk '/^fleet seed [0-9]+ failed/ { print; first = 1; next }
       /^  \[/ && first { print; first = 0; next }
       /^  replay: / { print }' "$log"
elif [ "$status" -ne 0 ]; then
  echo "the search did not run to the end (exit $status); see $log" >&2
fi
printf 'sweep: seeds %s..%s (%s) on %s threads: %s failing, %d.%03d s wall; log in %s\n' \
  "$start" "$end" "$n" "$threads" "$failing" $((wall_ms / 1000)) $((wall_ms % 1000)) "$log"
exit "$status"
