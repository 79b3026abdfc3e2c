#!/usr/bin/env bash
# Idle RSS of hub binaries side by side: each binary in turn runs
# `hub serve` on loopback ports with a fresh data dir, /healthz is waited
# for, then IDLE_SETTLE seconds; Rss, Anonymous and file-backed (Rss minus
# Anonymous) come from /proc/PID/smaps_rollup. IDLE_RUNS rounds alternate
# the binaries; the medians are printed last.
#
#   scripts/idle-rss.sh BIN...            e.g. /tmp/hub-before /tmp/hub-after
#
# Environment: IDLE_RUNS [5], IDLE_SETTLE [3] seconds, IDLE_ARGS (more
# `hub serve` arguments), IDLE_WARM=1 to keep the binaries' pages in the
# page cache as they are.
#
# Why the binaries' pages are evicted first: the file-backed part of the
# figure depends on how the binary's pages came into the page cache. The
# same binary measured 32.4 MiB idle straight after `go build` and 30.2
# MiB once its pages had been dropped and read back from disk (and 30.2
# after a `cp`), while another fresh build showed no difference. Dropping
# them once (`dd iflag=nocache count=0`) before the rounds measures every
# binary as an installed one, read from disk, and makes builds comparable.
set -euo pipefail

[ $# -ge 1 ] || { echo "usage: $0 BIN..." >&2; exit 2; }
runs=${IDLE_RUNS:-5}
settle=${IDLE_SETTLE:-3}
for b in "$@"; do
	[ -x "$b" ] || { echo "idle-rss: $b: not an executable" >&2; exit 2; }
done
work=$(mktemp -d)
hubpid=
cleanup() {
	if [ -n "$hubpid" ]; then kill "$hubpid" 2>/dev/null || true; wait "$hubpid" 2>/dev/null || true; fi
	rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=lib/ports.sh
. "$(dirname "$0")/lib/ports.sh"

# one BIN: prints "rss anon file" in KiB
one() {
	local d=$work/data.$RANDOM h
	mkdir -p "$d"
	h=$(free_port tcp)
	# shellcheck disable=SC2086 # IDLE_ARGS is a list of arguments
	"$1" serve --data-dir "$d" --mqtt-addr "127.0.0.1:$(free_port tcp)" --xmpp-addr "127.0.0.1:$(free_port tcp)" \
		--xmpp-proxy-addr "127.0.0.1:$(free_port tcp)" --http-addr "127.0.0.1:$h" --coap-addr "127.0.0.1:$(free_port udp)" \
		--log-level warn ${IDLE_ARGS:-} >"$d/log" 2>&1 &
	hubpid=$!
	local ok=
	for _ in $(seq 1000); do
		if curl -fsS "http://127.0.0.1:$h/healthz" >/dev/null 2>&1; then ok=1; break; fi
		kill -0 "$hubpid" 2>/dev/null || break
		sleep 0.01
	done
	if [ -z "$ok" ]; then
		echo "idle-rss: $1 did not become healthy:" >&2
		tail -n 20 "$d/log" >&2
		exit 1
	fi
	sleep "$settle"
	awk '/^Rss:/ {r = $2} /^Anonymous:/ {a = $2} END {print r, a, r - a}' "/proc/$hubpid/smaps_rollup"
	kill "$hubpid"
	wait "$hubpid" 2>/dev/null || true
	hubpid=
	rm -rf "$d"
}

if [ -z "${IDLE_WARM:-}" ]; then
	for b in "$@"; do dd if="$b" iflag=nocache count=0 status=none; done
fi
echo "round binary rss_kib anon_kib file_kib (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
for r in $(seq "$runs"); do
	for b in "$@"; do
		echo "$r $b $(one "$b")" | tee -a "$work/runs"
	done
done
echo "medians of $runs (load average now: $(cut -d' ' -f1-3 /proc/loadavg)):"
for b in "$@"; do
	python3 - "$b" "$work/runs" <<-'EOF'
		import statistics, sys
		b, path = sys.argv[1], sys.argv[2]
		rows = [list(map(int, l.split()[2:5])) for l in open(path) if l.split()[1] == b]
		med = [statistics.median(c) / 1024 for c in zip(*rows)]
		lo, hi = min(r[0] for r in rows) / 1024, max(r[0] for r in rows) / 1024
		print(f"{b}: RSS {med[0]:.1f} MiB ({lo:.1f}-{hi:.1f}), anonymous {med[1]:.1f} MiB, file-backed {med[2]:.1f} MiB")
	EOF
done
