#!/usr/bin/env bash
# Builds examples/go/etcd-naming, the Go client and server of the Go interop test
# (examples/tests/go_interop.rs), with Go and every Go library taken from Debian trixie's
# packages: the Go 1.24 toolchain, grpc-go 1.64 and etcd's client v3 3.5.16 with their
# dependencies, built in GOPATH mode. No Go module proxy is used.
#
# The packages are fetched through a private apt configuration (like etcd in install-deps.sh),
# so the machine's own apt state is left untouched, and unpacked under .tools/go/ (git-ignored).
# Idempotent: when the built binary is newer than the Go sources, nothing is fetched or built.
# Prints the binary's path on stdout; what it fetched and how long it took on stderr.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$root/.tools/go"
src="$root/examples/go/etcd-naming"
bin="$dir/bin/etcd-naming"
sysroot="$dir/root"
goroot="$sysroot/usr/lib/go-1.24"

# The import closure of examples/go/etcd-naming, found by building it until no import was
# missing (apt's own dependency closure of these -dev packages is about 200 packages, 113 MB,
# most of it for etcd's server). The compiler and its sources come first.
packages=(
  golang-1.24-go golang-1.24-src
  golang-google-grpc-dev golang-etcd-server-dev golang-google-protobuf-dev
  golang-github-golang-protobuf-1-5-dev golang-github-gogo-protobuf-dev
  golang-google-genproto-dev golang-golang-x-net-dev golang-golang-x-sys-dev
  golang-golang-x-text-dev golang-github-coreos-go-semver-dev
  golang-github-coreos-go-systemd-dev golang-go.uber-zap-dev golang-go.uber-multierr-dev
  golang-go.uber-atomic-dev
)

up_to_date() {
  [ -x "$bin" ] || return 1
  [ -z "$(find "$src" -newer "$bin" -type f -print -quit)" ]
}

if up_to_date; then
  echo "$bin"
  exit 0
fi

fetch() {
  local mirror apt debs started bytes
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  # Else the first mirror of the one-line format; the machine's own configuration either way.
  [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$mirror" ] || { echo "no Debian mirror in the machine's apt configuration" >&2; return 1; }
  apt="$dir/apt"; debs="$dir/debs"
  rm -rf "$apt" "$debs" "$sysroot"
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$debs" "$sysroot"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main" > "$apt/sources.list"
  # Only the package index: no translations, no AppStream metadata the host may be set up for.
  local opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
              -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o "Debug::NoLocking=1"
              -o "Acquire::Languages=none"
              -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
              -o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
              -o "Acquire::IndexTargets::deb::DEP-11-icons-hidpi::DefaultEnabled=false")
  started=$SECONDS
  echo "install-go: fetching ${#packages[@]} packages from Debian trixie" >&2
  local index
  index=$(apt-get "${opts[@]}" update 2>&1 | awk '/^Fetched/{print $2, $3}')
  echo "install-go: trixie's package index: ${index:-already current}" >&2
  (cd "$debs" && apt-get "${opts[@]}" download "${packages[@]}" >/dev/null 2>"$dir/download.log") || {
    cat "$dir/download.log" >&2
    return 1
  }
  bytes=$(du -cb "$debs"/*.deb | tail -n1 | cut -f1)
  for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$sysroot"; done
  echo "install-go: fetched and unpacked $(ls "$debs" | wc -l) packages, $((bytes / 1000000)) MB, in $((SECONDS - started)) s" >&2
  rm -rf "$debs"
}

if [ ! -x "$goroot/bin/go" ]; then
  fetch || { echo "install-go: could not fetch Go and its libraries from Debian trixie" >&2; exit 1; }
fi

started=$SECONDS
mkdir -p "$dir/bin"
(
  cd "$root"
  # GOPATH mode over the packages' sources; no network, no cgo (no C compiler needed).
  env GOROOT="$goroot" GOPATH="$sysroot/usr/share/gocode" GO111MODULE=off GOFLAGS= \
    GOPROXY=off GOTOOLCHAIN=local CGO_ENABLED=0 GOCACHE="$dir/cache" \
    "$goroot/bin/go" build -o "$bin" ./examples/go/etcd-naming
) || { echo "install-go: building examples/go/etcd-naming failed" >&2; exit 1; }
echo "install-go: built $bin in $((SECONDS - started)) s ($("$goroot/bin/go" version))" >&2
echo "$bin"
