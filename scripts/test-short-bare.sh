#!/usr/bin/env bash
# Checks that `go test -short ./...` runs on a machine with nothing but Go: in a private mount
# namespace /usr/bin holds only coreutils and Debian's essential shell tools (sh, bash, sed,
# grep, env), /usr/sbin and /usr/local/bin are empty (no mariadb, mariadbd, node, npm, gcc,
# git), the user cache folder is empty (no stripe-mock binary) and the Go module proxy is off.
# Needs root (unshare --mount) and a Go module cache with the project's modules.
# Usage: scripts/test-short-bare.sh [go test arguments, default ./...]
set -euo pipefail
cd "$(dirname "$0")/.."
go=$(command -v go || echo /usr/local/go/bin/go)
goroot=$("$go" env GOROOT)
gocache=$("$go" env GOCACHE)
[[ $# -gt 0 ]] || set -- ./...
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/bin" "$tmp/cache"
unshare --mount --propagation private bash -c '
set -euo pipefail
goroot=$1 gocache=$2 tmp=$3; shift 3
stage=$tmp/bin
for f in $(dpkg -L coreutils | grep -E "^(/usr)?/bin/") /usr/bin/{bash,dash,sh,env,grep,sed}; do
	if [[ -e $f ]]; then cp -L "$f" "$stage/"; fi
done
mount -t tmpfs tmpfs /usr/sbin
mount -t tmpfs tmpfs /usr/local/bin
mount --bind "$stage" /usr/bin
export PATH=$goroot/bin:/usr/bin GOCACHE=$gocache XDG_CACHE_HOME=$tmp/cache GOPROXY=off
for tool in mariadb mariadbd mariadb-install-db node npm gcc git stripe-mock; do
	if command -v "$tool" >/dev/null; then echo "test-short-bare: $tool is still reachable" >&2; exit 1; fi
done
exec go test -short -count=1 "$@"
' bare "$goroot" "$gocache" "$tmp" "$@"
