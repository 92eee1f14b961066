#!/usr/bin/env bash
# Real test of ansible/ (the reset_agent role and its playbooks); `make test-ansible` runs it.
# As root on Debian: lints with ansible-lint (production profile, offline), issues a throwaway
# CA and node certificate with playbooks/issue-certs.yml, applies playbooks/deploy-agents.yml
# with -c local into a throwaway root (service management off), checks every file, owner and
# mode it made and verifies the unit, then starts the INSTALLED agent with the INSTALLED config
# as the service user and checks its health over mTLS (resetctl, playbooks/check-agents.yml),
# checks idempotence (a second deploy, ending with the role's health check, and --check) and
# the refusals, rotates the audit log with the installed logrotate rule and verifies the hash
# chain across the rotation, and stops the agent with SIGTERM.
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$PWD
go=${GO:-go}

passed=0
failed=0
skipped=0
errors=0
tmp=""
agent_pid=""
svc=""

say() { printf 'test-ansible: %s\n' "$*" >&2; }

summary() {
	printf 'ansible: %d passed, %d failed%s\n' "$passed" "$failed" "$( ((skipped)) && printf ', %d skipped' "$skipped")"
}

cleanup() {
	local rc=$?
	if [[ -n $agent_pid ]] && kill -0 "$agent_pid" 2>/dev/null; then
		kill -KILL "$agent_pid" 2>/dev/null || true
		wait "$agent_pid" 2>/dev/null || true
	fi
	if [[ -n $svc ]]; then
		getent passwd "$svc" >/dev/null && userdel "$svc" 2>/dev/null
		getent group "$svc" >/dev/null && groupdel "$svc" 2>/dev/null
	fi
	[[ -n $tmp ]] && rm -rf "$tmp"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# check DESCRIPTION COMMAND...: records a failed assertion without stopping the step.
check() {
	local what=$1
	shift
	if ! "$@"; then
		say "  not ok: $what"
		errors=$((errors + 1))
	fi
}

# step NAME FUNCTION: later steps build on earlier ones, so the first failure ends the run.
# A FUNCTION returning 77 could not run here (missing optional tool) and counts as skipped.
step() {
	local name=$1 t0=$SECONDS rc=0
	errors=0
	say "== $name"
	"$2" || rc=$?
	if ((rc == 77)); then
		skipped=$((skipped + 1))
		say "skipped: $name"
	elif ((rc == 0 && errors == 0)); then
		passed=$((passed + 1))
		say "ok: $name ($((SECONDS - t0))s)"
	else
		failed=$((failed + 1))
		say "FAIL: $name"
		summary
		exit 1
	fi
}

# play NAME PLAYBOOK ARGS...: runs ansible-playbook against the test inventory, logs to
# $tmp/log/NAME.log and sets $changed from the recap. Returns ansible-playbook's status.
changed=""
play() {
	local name=$1 playbook=$2 rc=0
	shift 2
	changed=""
	ANSIBLE_CONFIG=$repo/ansible/ansible.cfg \
		ANSIBLE_LOCAL_TEMP=$tmp/ansible-tmp \
		ANSIBLE_REMOTE_TEMP=$tmp/ansible-tmp \
		ANSIBLE_NOCOLOR=1 \
		ANSIBLE_FORCE_COLOR=0 \
		ansible-playbook -i "$tmp/inventory.ini" -e "@$tmp/vars.yml" "$@" \
		"$repo/ansible/playbooks/$playbook" >"$tmp/log/$name.log" 2>&1 || rc=$?
	changed=$(sed -nE 's/^node1\.internal +: .*changed=([0-9]+).*/\1/p' "$tmp/log/$name.log" | tail -n 1)
	return "$rc"
}

show() { # show NAME: the end of a play's log, for a failure
	say "  --- end of $tmp/log/$1.log"
	tail -n "${2:-25}" "$tmp/log/$1.log" | sed 's/^/  | /' >&2
}

# mode PATH MODE USER GROUP
mode() {
	local got
	got=$(stat -c '%a %U %G' "$1" 2>/dev/null || echo missing)
	if [[ $got != "$2 $3 $4" ]]; then
		say "  $1: got $got, want $2 $3 $4"
		return 1
	fi
}

grep_q() { grep -qE -- "$1" "$2"; }
no_grep() { ! grep -qE -- "$1" "$2"; }

# --- steps -------------------------------------------------------------------------------

deps() {
	if ((EUID != 0)); then
		say "must run as root (it creates a system user and chowns files)"
		say "hint: run it in CI or a throwaway VM: sudo bash scripts/test-ansible.sh"
		return 1
	fi
	# One place installs packages (and keeps policy-rc.d scoped to the install).
	bash scripts/ensure-deps.sh --no-npm || return 1
	local c
	for c in ansible-playbook ansible-lint logrotate python3 setpriv "$go"; do
		check "$c is installed" command -v "$c" >/dev/null
	done
	say "$(ansible-playbook --version 2>/dev/null | head -n 1), $(ansible-lint --version 2>/dev/null | head -n 1 | sed 's/\x1b\[[0-9;]*m//g')"
}

lint() {
	# ansible/.ansible-lint: production profile, strict, offline (no galaxy, no schema refresh).
	if ! (cd ansible && ansible-lint --offline --nocolor) >"$tmp/log/lint.log" 2>&1; then
		show lint 60
		return 1
	fi
	tail -n 1 "$tmp/log/lint.log" >&2
	# Every default is documented in meta/argument_specs.yml, with the same value.
	python3 - <<'EOF' || return 1
import sys, yaml
role = "ansible/roles/reset_agent"
defaults = yaml.safe_load(open(f"{role}/defaults/main.yml"))
specs = yaml.safe_load(open(f"{role}/meta/argument_specs.yml"))["argument_specs"]
opts = specs["main"]["options"]
bad = [f"{k}: not in argument_specs main" for k in defaults if k not in opts]
bad += [f"{k}: in argument_specs but not in defaults" for k in opts if k not in defaults]
bad += [f"{k}: default {opts[k].get('default')!r} != {defaults[k]!r}" for k in defaults if k in opts and opts[k].get("default") != defaults[k]]
for entry, spec in specs.items():
    bad += [f"{entry}.{k}: not a role variable" for k in spec.get("options", {}) if k not in defaults]
for b in bad:
    print("test-ansible:   " + b, file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
}

build() {
	CGO_ENABLED=0 "$go" build -o "$tmp/bin/" ./cmd/reset-agent ./cmd/resetctl || return 1
	check "reset-agent version runs" "$tmp/bin/reset-agent" version >/dev/null
}

setup() {
	root=$tmp/root
	svc=ratest$$
	port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	password="vault-only-$RANDOM$RANDOM"
	bench=$root/home/frappe/frappe-bench
	# A node's skeleton, as Debian has it: the role creates only its own folders.
	mkdir -p "$bench/sites" "$root/etc" "$root/var/log" "$root/usr/local/bin" "$root/run" "$tmp/ansible-tmp"
	# The service user must reach the installed files through the throwaway folders.
	chmod 0755 "$tmp"
	chmod -R 0755 "$root"
	cat >"$tmp/inventory.ini" <<EOF
[reset_agents]
node1.internal ansible_connection=local ansible_host=127.0.0.1 ansible_python_interpreter=/usr/bin/python3 ansible_become=false
EOF
	cat >"$tmp/vars.yml" <<EOF
reset_agent_root: "$root"
reset_agent_binary_src: "$tmp/bin/reset-agent"
reset_agent_binary_cache_dir: "$tmp/cache"
reset_agent_resetctl: "$tmp/bin/resetctl"
reset_agent_pki_dir: "$tmp/pki"
reset_agent_user: "$svc"
reset_agent_create_user: true
reset_agent_manage_service: false
reset_agent_health_check: false
reset_agent_listen_address: 127.0.0.1
reset_agent_port: $port
reset_agent_protected_sites: ["*.prod.example.com"]
reset_agent_extra_read_write_paths: [/var/cache/frappe]
reset_agent_mariadb_password: "$password"
reset_agent_health_cert: "$tmp/pki/alice@example.test.pem"
reset_agent_health_key: "$tmp/pki/alice@example.test-key.pem"
EOF
}

issue_certs() {
	if ! play certs issue-certs.yml; then
		show certs
		return 1
	fi
	local f
	for f in ca.pem ca-key.pem node1.internal.pem node1.internal-key.pem; do
		check "issue-certs wrote pki/$f" test -s "$tmp/pki/$f"
	done
	check "pki folder is 0700" mode "$tmp/pki" 700 root root
	if ! play certs2 issue-certs.yml; then
		show certs2
		return 1
	fi
	check "issue-certs again changes nothing (changed=$changed)" test "$changed" = 0
	"$tmp/bin/resetctl" certs issue --dir "$tmp/pki" --role operator --name alice@example.test >/dev/null || return 1
}

deploy() {
	if ! play deploy deploy-agents.yml; then
		show deploy 40
		return 1
	fi
	say "  first run: changed=$changed"
}

files() {
	local bin=$root/usr/local/bin/reset-agent etc=$root/etc/reset-agent
	local tls=$etc/tls audit=$root/var/log/reset-agent state=$root/var/lib/reset-agent
	local unit=$root/etc/systemd/system/reset-agent.service lr=$root/etc/logrotate.d/reset-agent

	check "service user is a system user with no shell" \
		python3 -c 'import pwd, sys; p = pwd.getpwnam(sys.argv[1]); sys.exit(not (p.pw_uid < 1000 and p.pw_shell == "/usr/sbin/nologin"))' "$svc"
	check "binary 0755 root" mode "$bin" 755 root root
	check "binary is the build" cmp -s "$bin" "$tmp/bin/reset-agent"
	check "config folder 0750 root:$svc" mode "$etc" 750 root "$svc"
	check "config 0640 root:$svc" mode "$etc/config.yaml" 640 root "$svc"
	check "TLS folder 0750 root:$svc" mode "$tls" 750 root "$svc"
	check "CA 0644 root" mode "$tls/ca.pem" 644 root root
	check "node certificate 0644 root" mode "$tls/agent.pem" 644 root root
	check "node key 0600 $svc" mode "$tls/agent-key.pem" 600 "$svc" "$svc"
	check "CA is the issued one" cmp -s "$tls/ca.pem" "$tmp/pki/ca.pem"
	check "node certificate is the issued one" cmp -s "$tls/agent.pem" "$tmp/pki/node1.internal.pem"
	check "node key is the issued one" cmp -s "$tls/agent-key.pem" "$tmp/pki/node1.internal-key.pem"
	check "password file 0600 $svc" mode "$etc/mariadb-password" 600 "$svc" "$svc"
	check "password file holds the password" test "$(cat "$etc/mariadb-password")" = "$password"
	check "audit folder 0750 $svc" mode "$audit" 750 "$svc" "$svc"
	check "state folder 0700 $svc" mode "$state" 700 "$svc" "$svc"
	check "logrotate rule 0644 root" mode "$lr" 644 root root
	check "unit 0644 root" mode "$unit" 644 root root

	# The config, key by key (the agent also refuses unknown keys when it starts later).
	check "config content" env ROOT="$root" PORT="$port" python3 - "$etc/config.yaml" <<'EOF'
import os, sys, yaml
root, port = os.environ["ROOT"], int(os.environ["PORT"])
got = yaml.safe_load(open(sys.argv[1]))
want = {
    "listen": f"127.0.0.1:{port}",
    "host_names": ["node1.internal"],
    "tls": {"ca": f"{root}/etc/reset-agent/tls/ca.pem",
            "cert": f"{root}/etc/reset-agent/tls/agent.pem",
            "key": f"{root}/etc/reset-agent/tls/agent-key.pem"},
    "bench": {"path": f"{root}/home/frappe/frappe-bench", "command": "", "archive_path": ""},
    "mariadb": {"socket": f"{root}/run/mysqld/mysqld.sock", "host": "", "port": 3306, "user": "root",
                "password_file": f"{root}/etc/reset-agent/mariadb-password",
                "dump_command": "mariadb-dump", "client_command": "mariadb"},
    "protected_sites": ["*.prod.example.com"],
    "state_dir": f"{root}/var/lib/reset-agent",
    "audit": {"path": f"{root}/var/log/reset-agent/audit.jsonl"},
    "log": {"level": "info"},
}
if got != want:
    for k in sorted(set(got) | set(want)):
        if got.get(k) != want.get(k):
            print(f"test-ansible:   config {k}: got {got.get(k)!r}, want {want.get(k)!r}", file=sys.stderr)
    sys.exit(1)
EOF

	local want
	for want in \
		"^User=$svc\$" "^Group=$svc\$" \
		"^ExecStart=$bin serve --config $etc/config.yaml\$" \
		'^ExecReload=/bin/kill -HUP \$MAINPID$' '^Restart=on-failure$' \
		'^NoNewPrivileges=yes$' '^ProtectSystem=strict$' \
		"^ReadWritePaths=$bench $audit $state $root/var/cache/frappe\$" '^ProtectHome=read-only$' '^PrivateTmp=yes$' \
		'^ProtectKernelTunables=yes$' '^ProtectKernelModules=yes$' '^ProtectKernelLogs=yes$' \
		'^ProtectControlGroups=yes$' '^RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6$' \
		'^CapabilityBoundingSet=$' '^MemoryDenyWriteExecute=yes$'; do
		check "unit has $want" grep_q "$want" "$unit"
	done
	for want in "^$audit/audit.jsonl \{" '^ +daily$' '^ +rotate 365$' '^ +compress$' '^ +delaycompress$' \
		"^ +create 0640 $svc $svc\$" '^ +systemctl reload reset-agent.service'; do
		check "logrotate rule has $want" grep_q "$want" "$lr"
	done
	check "logrotate rule never copytruncates" no_grep '^[^#]*copytruncate' "$lr"
	if ! logrotate --debug --state "$tmp/logrotate.state" "$lr" >"$tmp/log/logrotate-debug.log" 2>&1; then
		check "logrotate accepts the rule" false
		show logrotate-debug
	fi
	check "logrotate does not refuse the folder" no_grep 'insecure|^error' "$tmp/log/logrotate-debug.log"
}

unit() {
	local unit=$root/etc/systemd/system/reset-agent.service
	if ! command -v systemd-analyze >/dev/null; then
		say "  systemd-analyze not installed (Debian package systemd)"
		return 77
	fi
	if ! systemd-analyze verify --man=no "$unit" >"$tmp/log/verify.log" 2>&1; then
		show verify
		return 1
	fi
	# Anything said about our unit is a problem (other lines are about the host's units).
	if grep -q 'reset-agent' "$tmp/log/verify.log"; then
		show verify
		return 1
	fi
	# Informational: the exposure score, where the offline analysis works without PID 1 systemd.
	if systemd-analyze security --offline=true --no-pager "$unit" >"$tmp/log/security.log" 2>&1; then
		say "  systemd-analyze security: $(grep -E 'Overall exposure level' "$tmp/log/security.log" | sed 's/^ *//; s/\x1b\[[0-9;]*m//g')"
	else
		say "  systemd-analyze security --offline not available here (skipped, informational only)"
	fi
}

idempotence() {
	# The agent runs now, so this run goes through the role's own health check at the end.
	if ! play deploy2 deploy-agents.yml -e reset_agent_health_check=true; then
		show deploy2
		return 1
	fi
	if [[ $changed != 0 ]]; then
		say "  second run changed=$changed:"
		grep -B2 '^changed:' "$tmp/log/deploy2.log" | sed 's/^/  | /' >&2
		return 1
	fi
	check "the deploy ends with node1.internal healthy" grep_q 'node1.internal healthy' "$tmp/log/deploy2.log"
	if ! play check deploy-agents.yml --check --diff; then
		show check
		return 1
	fi
	check "check mode reports nothing to change (changed=$changed)" test "$changed" = 0
}

refusals() {
	local bin=$root/usr/local/bin/reset-agent before sum
	before=$(stat -c '%i %Y' "$bin")
	sum=$(sha256sum "$tmp/bin/reset-agent" | cut -d' ' -f1)

	if play badsum deploy-agents.yml -e reset_agent_binary_src= -e "reset_agent_binary_url=file://$tmp/bin/reset-agent" \
		-e "reset_agent_binary_sha256=$(printf '0%.0s' {1..64})"; then
		check "a wrong sha256 is refused" false
	fi
	check "wrong sha256: the download is refused" grep_q 'checksum|sha256' "$tmp/log/badsum.log"
	check "wrong sha256: the installed binary is untouched" test "$(stat -c '%i %Y' "$bin")" = "$before"

	if ! play goodsum deploy-agents.yml -e reset_agent_binary_src= -e "reset_agent_binary_url=file://$tmp/bin/reset-agent" \
		-e "reset_agent_binary_sha256=$sum"; then
		show goodsum
		return 1
	fi
	check "right sha256: cached verified download" test -s "$tmp/cache/reset-agent-$sum"
	check "right sha256: same binary, node untouched" test "$(stat -c '%i %Y' "$bin")" = "$before"
	check "right sha256: only the controller download changed (changed=$changed)" test "$changed" = 1

	if play both deploy-agents.yml -e "reset_agent_binary_url=file://$tmp/bin/reset-agent" -e "reset_agent_binary_sha256=$sum"; then
		check "a build and a URL together are refused" false
	fi
	check "both sources: refused by preflight" grep_q 'set either reset_agent_binary_src' "$tmp/log/both.log"

	if play notls deploy-agents.yml -e reset_agent_cert_name=node9.internal; then
		check "missing node certificate is refused" false
	fi
	check "missing certificate: refused by preflight with a hint" \
		grep_q "missing $tmp/pki/node9.internal.pem, $tmp/pki/node9.internal-key.pem on the controller; run playbooks/issue-certs.yml" "$tmp/log/notls.log"

	if play nohealthcert deploy-agents.yml -e reset_agent_health_check=true -e reset_agent_health_cert=; then
		check "a health check without an operator certificate is refused" false
	fi
	check "no operator certificate: refused by preflight" grep_q 'the health check at the end needs your operator certificate' "$tmp/log/nohealthcert.log"

	if play nouser deploy-agents.yml -e reset_agent_create_user=false -e reset_agent_user=no-such-user-$$; then
		check "a missing service user is refused" false
	fi
	check "missing user: refused by preflight" grep_q "user no-such-user-$$ does not exist" "$tmp/log/nouser.log"

	# Bench mode must run as the bench owner; the throwaway bench belongs to root.
	if play owner deploy-agents.yml -e reset_agent_bench_command=/usr/local/bin/bench; then
		check "bench mode as a non-owner is refused" false
	fi
	check "bench owner: refused by preflight" grep_q "owned by root, but reset-agent would run as $svc" "$tmp/log/owner.log"

	# Nothing secret reaches Ansible's output, in any run so far.
	check "no run printed the MariaDB password" no_grep "$password" <(cat "$tmp"/log/*.log)
	check "no run printed a private key" no_grep 'PRIVATE KEY' <(cat "$tmp"/log/*.log)
}

agent() {
	local bin=$root/usr/local/bin/reset-agent cfg=$root/etc/reset-agent/config.yaml
	# As the service user, so the installed owners and modes are what lets it read its files.
	setpriv --reuid="$svc" --regid="$svc" --init-groups "$bin" serve --config "$cfg" 2>"$tmp/log/agent.log" &
	agent_pid=$!
	cat >"$tmp/resetctl.yaml" <<EOF
state_dir: state
identity: {ca: pki/ca.pem, cert: pki/alice@example.test.pem, key: pki/alice@example.test-key.pem}
agents: {port: $port, hosts: {node1.internal: "127.0.0.1:$port"}}
EOF
	local i ok=""
	for ((i = 0; i < 50; i++)); do
		if ! kill -0 "$agent_pid" 2>/dev/null; then
			say "  the installed agent exited:"
			show agent
			return 1
		fi
		if "$tmp/bin/resetctl" agents --config "$tmp/resetctl.yaml" --json >"$tmp/agents.json" 2>"$tmp/log/resetctl.log"; then
			ok=1
			break
		fi
		sleep 0.2
	done
	if [[ -z $ok ]]; then
		say "  resetctl agents never saw a healthy agent:"
		cat "$tmp/agents.json" "$tmp/log/resetctl.log" >&2
		show agent
		return 1
	fi
	check "resetctl agents --json: node1.internal healthy, the installed version" \
		env WANT="$("$bin" version)" python3 - "$tmp/agents.json" <<'EOF'
import json, os, sys
got = json.load(open(sys.argv[1]))
ok = len(got) == 1 and got[0]["host"] == "node1.internal" and got[0]["healthy"] and got[0]["version"] == os.environ["WANT"]
if not ok:
    print("test-ansible:   resetctl agents said " + json.dumps(got), file=sys.stderr)
sys.exit(0 if ok else 1)
EOF

	# The playbook health check, for real: passes against the agent, fails on a dead port.
	if ! play health check-agents.yml -e reset_agent_health_check=true; then
		show health
		return 1
	fi
	check "check-agents reports node1.internal healthy" grep_q 'node1.internal healthy' "$tmp/log/health.log"
	local dead
	dead=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	if play health-dead check-agents.yml -e reset_agent_health_check=true -e "reset_agent_port=$dead" -e reset_agent_health_retries=1; then
		check "check-agents fails when the agent does not answer" false
	fi
	check "check-agents names the unreachable agent" grep_q 'resetctl agents failed \(exit 1\)' "$tmp/log/health-dead.log"
}

rotation() {
	local log=$root/var/log/reset-agent/audit.jsonl bin=$root/usr/local/bin/reset-agent
	local lr=$root/etc/logrotate.d/reset-agent before
	check "the agent wrote audit lines" test -s "$log"
	before=$(wc -l <"$log")
	# The installed rule, forced. Its postrotate (systemctl reload) has no systemd here, so
	# the test sends the SIGHUP that ExecReload would.
	if ! logrotate --force --state "$tmp/logrotate.state" "$lr" >"$tmp/log/logrotate.log" 2>&1; then
		show logrotate
		return 1
	fi
	check "rotated to audit.jsonl.1" test "$(wc -l <"$log.1")" = "$before"
	check "logrotate created the new file 0640 $svc" mode "$log" 640 "$svc" "$svc"
	kill -HUP "$agent_pid"
	sleep 0.3
	"$tmp/bin/resetctl" agents --config "$tmp/resetctl.yaml" --json >/dev/null 2>>"$tmp/log/resetctl.log" || return 1
	check "the reopened log has the new lines" test -s "$log"
	check "the rotated file kept its lines" test "$(wc -l <"$log.1")" = "$before"
	if ! "$bin" audit verify --file "$log.1" --file "$log" >"$tmp/log/verify-audit.log" 2>&1; then
		check "audit verify across the rotation" false
		show verify-audit
	fi
	say "  $(cat "$tmp/log/verify-audit.log")"
	check "the new file links to the rotated one" env A="$log.1" B="$log" python3 -c '
import hashlib, json, os
last = open(os.environ["A"], "rb").read().splitlines()[-1]
first = json.loads(open(os.environ["B"], "rb").readline())
raise SystemExit(first["prev"] != hashlib.sha256(last).hexdigest())'
}

stop() {
	kill -TERM "$agent_pid"
	local rc=0 i
	for ((i = 0; i < 50; i++)); do
		kill -0 "$agent_pid" 2>/dev/null || break
		sleep 0.2
	done
	wait "$agent_pid" || rc=$?
	agent_pid=""
	if ((rc != 0)); then
		say "  the agent exited $rc on SIGTERM"
		show agent
		return 1
	fi
}

tmp=$(mktemp -d /tmp/test-ansible.XXXXXX)
mkdir -p "$tmp/log"
step "dependencies (ansible-core, ansible-lint, logrotate)" deps
step "ansible-lint (production profile) and argument specs" lint
step "build reset-agent and resetctl" build
setup
step "issue-certs.yml: CA and node certificate with resetctl, idempotent" issue_certs
step "deploy-agents.yml into a throwaway root" deploy
step "files, owners, modes, config, unit, logrotate rule" files
step "systemd-analyze verify" unit
step "installed agent healthy over mTLS (resetctl, check-agents.yml)" agent
step "idempotence (second run with health check, then --check: changed=0)" idempotence
step "refusals (sha256, binary source, certificates, user, bench owner), no secrets in output" refusals
step "audit log rotation with the installed rule" rotation
step "graceful stop on SIGTERM" stop
summary
