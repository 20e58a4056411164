#!/usr/bin/env bash
# The main job on the in-memory default: hello services, a gateway and a simulated etcd in one
# process (registration, expiry and discovery, step by step). Installs protoc if missing (the
# crates compile protobufs at build time), then runs the demo. Nothing else is needed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install-deps.sh --protoc-only
exec cargo run --quiet --example demo "$@"
