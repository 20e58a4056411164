#!/usr/bin/env bash
# Every benchmark in one command: installs etcd and protoc if needed, builds
# optimised, starts its own etcd on 127.0.0.1 and prints one markdown table of figures and
# ratios, also written to target/bench-results.md. Every loop is bounded in count; the full
# run takes a few minutes on 2 cores.
#
#   bash scripts/bench.sh              # everything
#   bash scripts/bench.sh --quick      # a scaled-down smoke run
#   bash scripts/bench.sh memory       # one part: overhead, memory, sim, discovery, fanout (or a..e)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

etcd_dir="$(bash scripts/install-deps.sh)"
export ETCD_BIN="$etcd_dir/etcd"
export PATH="$etcd_dir:$PATH"

part=all
args=()
for arg in "$@"; do
  case "$arg" in
    -*) args+=("$arg") ;;
    *) part="$arg" ;;
  esac
done

cargo build --release -p registry-benches
exec "$root/target/release/registry-benches" "$part" "${args[@]}"
