#!/usr/bin/env bash
# The full reliability run: faults against real etcd processes on loopback (a single
# server killed, stopped past the TTL, compacted under cut-off caches; a three-member cluster
# losing its leader, a follower and quorum; delays, resets and black holes through a TCP proxy;
# restores from an older backup, plain and bumped; a gateway restarted during an outage),
# a 10-minute soak (a target of 1,000 registrations, deregistrations and deaths per second,
# 1,000 discovery handles on 10 services; REGISTRY_SOAK_SECS sets its duration), and the
# fuzzing of both backends, all at full size (REGISTRY_FAULTS_FULL=1: 50 instances and 10
# caches per fault, thousands of fuzz cases). `cargo test --workspace` runs the same tests
# shortened (the soak for 20 s). Prints the figures at the end; exits non-zero if
# any test failed.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

etcd_dir="$(bash scripts/install-deps.sh)" || exit 1
export ETCD_BIN="$etcd_dir/etcd"
export PATH="$etcd_dir:$PATH"
export REGISTRY_FAULTS_FULL=1

log="$(mktemp -t registry-faults.XXXXXX)"
trap 'rm -f "$log"' EXIT
failed=0
run() {
  echo "== cargo test $*" >&2
  # One test at a time: the full sizes are meant to have the machine to themselves.
  if ! cargo test "$@" -- --nocapture --test-threads=1 2>&1 | tee -a "$log"; then
    failed=1
  fi
}

run -p registry-etcd --lib testing::proxy
# The arbitrary-input fuzz of the API is a conformance case; the fuzz targets keep discovery
# over garbage (both) and connecting (etcd).
run -p registry-memory --test conformance public_api_survives_arbitrary_input
run -p registry-memory --test fuzz
run -p registry-etcd --test conformance public_api_survives_arbitrary_input
run -p registry-etcd --test fuzz
run -p registry-examples --test faults_server --test faults_network --test faults_cluster --test faults_restore --test gateway_restart
# The soak in an optimised build: the debug build cannot drive 1,000 writes/s on two cores.
run --release -p registry-examples --test soak

echo
echo "== figures (REGISTRY_FAULTS_FULL=1)"
# With --nocapture a test's first line shares its line with "test name ... ".
figures="$(grep -o 'FIGURE .*' "$log" | sed 's/^FIGURE //')"
echo "$figures" | sed 's/^/  /'
echo
healed=$(echo "$figures" | grep -c ': healed:' || true)
echo "faults survived: $healed (each followed by the full check: re-registered, caches equal to etcd, histories, staleness)"
echo "worst staleness per fault (observed / bound):"
echo "$figures" | grep ': healed:' \
  | sed -E 's/^([^:]*):.*worst staleness of ([0-9]+) dead instances ([^ ]+) \(bound ([^)]*)\).*/  \1: \3 \/ \4 (\2 dead)/'
echo "tests: $(grep -E '^test result:' "$log" | awk '{p+=$4; f+=$6} END {print p" passed, "f" failed"}')"
exit "$failed"
