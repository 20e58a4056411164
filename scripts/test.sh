#!/usr/bin/env bash
# The project's whole test run: installs what the tests need (protoc, etcd 3.5), then checks
# formatting, lints, and runs every test of the workspace, doctests included. The etcd tests
# start their own servers on 127.0.0.1 from the etcd installed here; they never skip.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

etcd_dir="$(bash scripts/install-deps.sh)"
export ETCD_BIN="$etcd_dir/etcd"
export PATH="$etcd_dir:$PATH"
REGISTRY_GO_NAMING_BIN="$(bash scripts/install-go.sh)"; export REGISTRY_GO_NAMING_BIN # the Go interop client: ~75 MB and a minute or more, once

if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy -D warnings" >&2
cargo clippy --workspace --all-targets -- -D warnings
# The workspace build turns registry-service's `metrics` feature on (the examples use it); the
# crate must also be clean, and free of the `metrics` dependency, without it.
echo "== registry-service without its metrics feature" >&2
if cargo tree -p registry-service -e normal --prefix none | grep -q '^metrics '; then
  echo "registry-service depends on metrics with the feature off" >&2
  exit 1
fi
cargo clippy -p registry-service --all-targets -- -D warnings
bash scripts/install-chromium.sh
echo "== cargo test --workspace" >&2
cargo test --workspace "$@" -- --skip fleet_search --skip service_seed_search
# The service-layer suite again over seeds 0..100 of the simulator's timing (each seed a new
# interleaving of replies, watch openings and deliveries), on its own so that the seeds and the
# wall time are printed; every failing scenario and seed with the line that replays it.
echo "== the service-layer suite over 100 seeds of the simulator's timing" >&2
cargo test -p registry-memory --test service_suite "$@" -- --nocapture --exact service_seed_search
# The seeded fleet search on its own, so that its seeds and wall time are printed: the fixed
# seeds 0..1000, plus a window of 1,000 new seeds derived from the commit, so each commit
# explores seeds no run has tried (REGISTRY_FLEET_WINDOW=<start>..<end> or `none` overrides).
# Each seed draws the simulator's timing too. Every failing seed is printed with its replay
# command (REGISTRY_SEED=<seed>).
echo "== the seeded fleet search of the simulator" >&2
REGISTRY_FLEET_COMMIT="${REGISTRY_FLEET_COMMIT:-$(git rev-parse --short=12 HEAD 2>/dev/null || true)}" \
  cargo test -p registry-memory --test fleet "$@" -- --nocapture --exact fleet_search
echo "== cargo doc -D warnings" >&2
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
echo "== the main job: the in-memory demo" >&2
cargo run --quiet --example demo > target/demo-output.txt
tail -n 1 target/demo-output.txt
