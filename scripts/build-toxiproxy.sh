#!/bin/sh
# Builds toxiproxy-server, which puts each lab region's latency between its injectors and the
# target (loadorch/lab/latency.py), at one pinned version from the Go module proxy into BINDIR.
# Does nothing when BINDIR already holds that version. `make toxiproxy` runs it.
#
#   scripts/build-toxiproxy.sh VERSION BINDIR      e.g. v2.12.0 .tools/bin
set -eu

version=${1:?usage: build-toxiproxy.sh VERSION BINDIR (e.g. v2.12.0 .tools/bin)}
bindir=${2:?usage: build-toxiproxy.sh VERSION BINDIR (e.g. v2.12.0 .tools/bin)}
module=github.com/Shopify/toxiproxy/v2
binary=$bindir/toxiproxy-server
plain=${version#v}
# toxiproxy's go.mod says `go 1.23.0`; Go 1.21+ fetches a newer toolchain by itself (GOTOOLCHAIN).
need_minor=23

# The version is linked into the binary (as toxiproxy's own release builds do), so
# `toxiproxy-server -version` and `spike doctor` can tell which one is there without Go.
if [ -x "$binary" ] && [ "$("$binary" -version 2>/dev/null)" = "toxiproxy-server version $plain" ]; then
  echo "toxiproxy-server $plain is already built: $binary"
  exit 0
fi

find_go() {
  command -v go 2>/dev/null || { [ -x /usr/local/go/bin/go ] && echo /usr/local/go/bin/go; } || true
}
go=$(find_go)
if [ -z "$go" ]; then
  echo "Go is not installed; installing Debian's golang-go"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go; }; then
    echo "error: cannot build toxiproxy-server $plain: no Go toolchain, and apt-get install golang-go failed" >&2
    echo "  fix: install Go 1.21 or newer (as root: apt-get install -y golang-go), then run make toxiproxy" >&2
    exit 1
  fi
  go=$(find_go)
fi

goversion=$("$go" env GOVERSION 2>/dev/null || echo unknown)
minor=$(echo "$goversion" | sed -n 's/^go1\.\([0-9][0-9]*\).*/\1/p')
if [ -z "$minor" ]; then
  echo "error: cannot tell the version of $go ($goversion)" >&2
  echo "  fix: install Go 1.21 or newer and put it first on PATH, then run make toxiproxy" >&2
  exit 1
fi
if [ "$minor" -lt 21 ]; then
  echo "error: toxiproxy-server $plain needs Go 1.$need_minor or newer; $go is $goversion," >&2
  echo "  which is too old to fetch a newer toolchain itself (that needs Go 1.21+)" >&2
  echo "  fix: install Go 1.21 or newer (Debian 13's golang-go is 1.24) first on PATH, then run make toxiproxy" >&2
  exit 1
fi
if [ "$minor" -lt "$need_minor" ]; then
  # The one newer toolchain approved on these machines; the go command takes it from the module proxy.
  GOTOOLCHAIN=go1.27.3
  export GOTOOLCHAIN
  echo "$goversion is older than Go 1.$need_minor: building with GOTOOLCHAIN=$GOTOOLCHAIN"
fi

mkdir -p "$bindir"
staging=$(mktemp -d "$bindir/.toxiproxy-build.XXXXXX")
trap 'rm -rf "$staging"' EXIT INT TERM
echo "building toxiproxy-server $plain with $goversion ($module/cmd/server@$version)"
# CGO off: a static binary that needs no C compiler to build.
GOBIN=$staging CGO_ENABLED=0 "$go" install \
  -ldflags "-s -w -X $module.Version=$plain" \
  "$module/cmd/server@$version"
mv -f "$staging/server" "$binary"
"$binary" -version
echo "built $binary"
