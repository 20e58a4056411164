#!/usr/bin/env bash
# The main job on the in-memory default: hello services, a gateway and a simulated etcd in one
# process (registration, expiry and discovery, step by step). Installs protoc if missing (the
# crates compile protobufs at build time), builds the demo showing cargo's progress, then runs
# it. Nothing else is needed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install-deps.sh --protoc-only
# Build first with cargo's own progress on stderr (a fresh clone compiles for a minute or two),
# then run quietly: only the demo's output follows.
echo "== building the demo (cargo's progress below; nothing to do on later runs)" >&2
cargo build --example demo
echo "== running the demo" >&2
exec cargo run --quiet --example demo "$@"
