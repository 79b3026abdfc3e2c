#!/usr/bin/env bash
# CoAP interop with libcoap's coap-client (Debian libcoap3-bin): POST, GET,
# observe receiving a POST from another coap-client, block-wise PUT/GET and
# observe of a 2 KiB value, 4.04 for a never-published topic, 4.00 for a
# path outside /ps, and /.well-known/core. With COAPS_PORT set (the hub
# started with --coaps-addr), a DTLS PSK device (sensor1) is tried too.
set -euo pipefail

: "${COAP_PORT:?COAP_PORT is not set}"
client=""
for c in coap-client coap-client-notls coap-client-openssl coap-client-gnutls; do
	if command -v "$c" >/dev/null 2>&1; then client=$c; break; fi
done
if [ -z "$client" ]; then
	echo "FAIL: no coap-client (install libcoap3-bin)"; exit 1
fi
run=$$ # a fresh topic tree per run, so a rerun against one hub starts clean
base="coap://127.0.0.1:$COAP_PORT/ps/interop/coap$run"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fail() { echo "FAIL: $*"; exit 1; }
# coap() runs one bounded coap-client request; error responses ("4.04 ...")
# go to stderr, so both streams are kept.
coap() { timeout 15 "$client" -B 10 "$@" 2>&1; }

# POST then GET: GET reads the retained value (the one answer to "read
# this topic" in every protocol), so a plain POST leaves nothing to read
# and a retained one (EMQX's ?retain=true) does.
out=$(coap -m post -t 0 -e "21.0" "$base/temp")
[ -z "$out" ] || fail "POST answered $out"
out=$(coap -m get "$base/temp")
case "$out" in 4.04*) ;; *) fail "GET after a plain POST gave '$out', want 4.04" ;; esac
out=$(coap -m post -t 0 -e "21.5" "$base/temp?retain=true")
[ -z "$out" ] || fail "retained POST answered $out"
out=$(coap -m get "$base/temp")
[ "$out" = "21.5" ] || fail "GET after a retained POST gave '$out'"
echo "ok: coap POST then GET reads 21.5"

# A NON request is answered NON (RFC 7252 §5.2.3): libcoap's debug log
# (-v 7) shows the type of the response it received.
out=$(coap -N -v 7 -m get "$base/temp")
resp=$(printf '%s\n' "$out" | grep -A1 'received' | grep -m1 'c:2.05' || true)
case "$resp" in *"t:NON c:2.05"*) ;; *) fail "NON GET answered '$resp', want a NON 2.05 (log: $out)" ;; esac
echo "ok: coap NON GET (-N) answered NON"

# PUT retains; the value is listed in /.well-known/core.
coap -m put -t 50 -e '{"on":true}' "$base/lamp" >/dev/null
out=$(coap -m get "coap://127.0.0.1:$COAP_PORT/.well-known/core")
case "$out" in
*"</ps/interop/coap$run/lamp>;rt=\"core.ps.data\";obs;ct=50"*) ;;
*) fail "/.well-known/core lacks the retained topic: $out" ;;
esac
echo "ok: coap PUT retains, /.well-known/core lists it"

# Observe: one coap-client observes for 5 s, another POSTs twice.
obs_out="$tmp/observe.out"
timeout 20 "$client" -B 10 -s 5 -w -o "$obs_out" "$base/obs" >/dev/null 2>&1 &
obs_pid=$!
sleep 1 # let the registration be answered
coap -m post -e "first-note" "$base/obs" >/dev/null
sleep 0.3
coap -m post -N -e "second-note" "$base/obs" >/dev/null
wait "$obs_pid" || true
grep -qx "first-note" "$obs_out" || fail "observer did not get the CON POST: $(cat "$obs_out" 2>/dev/null)"
grep -qx "second-note" "$obs_out" || fail "observer did not get the NON POST: $(cat "$obs_out" 2>/dev/null)"
echo "ok: coap observe (-s 5) got POSTs from another coap-client"

# Block-wise both ways with 64-byte blocks and a 2 KiB payload.
python3 -c 'import sys; sys.stdout.write("".join(chr(97 + i % 26) for i in range(2048)))' >"$tmp/big.in"
coap -m put -b 64 -t 42 -f "$tmp/big.in" "$base/big" >/dev/null
coap -m get -b 64 -o "$tmp/big.out" "$base/big" >/dev/null
cmp -s "$tmp/big.in" "$tmp/big.out" || fail "block-wise GET returned $(wc -c <"$tmp/big.out" 2>/dev/null) bytes, want 2048"
echo "ok: coap block-wise PUT and GET of 2 KiB (-b 64)"

timeout 20 "$client" -B 10 -s 3 -b 64 -o "$tmp/bigobs.out" "$base/bigobs" >/dev/null 2>&1 &
obs_pid=$!
sleep 1
coap -m post -b 64 -f "$tmp/big.in" "$base/bigobs" >/dev/null
wait "$obs_pid" || true
cmp -s "$tmp/big.in" "$tmp/bigobs.out" || fail "block-wise notification had $(wc -c <"$tmp/bigobs.out" 2>/dev/null) bytes, want 2048"
echo "ok: coap block-wise notification of 2 KiB"

# Errors.
out=$(coap -m get "$base/never/published")
case "$out" in 4.04*) ;; *) fail "GET of a never-published topic gave '$out', want 4.04" ;; esac
echo "ok: coap 4.04 for a never-published topic"
out=$(coap -m post -e x "coap://127.0.0.1:$COAP_PORT/not-ps/x")
case "$out" in 4.00*) ;; *) fail "POST outside /ps gave '$out', want 4.00" ;; esac
out=$(coap -m post -t 9999 -e x "$base/cf")
case "$out" in 4.15*) ;; *) fail "POST with content-format 9999 gave '$out', want 4.15" ;; esac
echo "ok: coap 4.00 for a path outside /ps, 4.15 for an unknown content-format"

# DTLS with a pre-shared key, when the hub listens for coaps.
if [ -n "${COAPS_PORT:-}" ]; then
	dtls=""
	for c in coap-client-openssl coap-client-gnutls coap-client; do
		command -v "$c" >/dev/null 2>&1 || continue
		info=$("$c" 2>&1 || true)
		case "$info" in
		*"TLS Library: None"*) ;;
		*"TLS Library:"*) dtls=$c; break ;;
		esac
	done
	if [ -z "$dtls" ]; then
		echo "FAIL: no DTLS-capable coap-client"; exit 1
	fi
	sbase="coaps://127.0.0.1:$COAPS_PORT/ps/devices/sensor1"
	out=$(timeout 15 "$dtls" -B 10 -u sensor1 -k secret1 -m post -e 7 "$sbase/dtls?retain=true" 2>&1)
	[ -z "$out" ] || fail "DTLS POST answered $out"
	out=$(timeout 15 "$dtls" -B 10 -u sensor1 -k secret1 -m get "$sbase/dtls" 2>&1)
	[ "$out" = "7" ] || fail "DTLS GET gave '$out'"
	out=$(timeout 15 "$dtls" -B 10 -u sensor1 -k secret1 -m post -e 7 "coaps://127.0.0.1:$COAPS_PORT/ps/not/mine" 2>&1)
	case "$out" in 4.03*) ;; *) fail "DTLS POST outside devices/sensor1 gave '$out', want 4.03" ;; esac
	echo "ok: coaps with PSK identity sensor1: POST, GET, 4.03 outside its tree"
fi
