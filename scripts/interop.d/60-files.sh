#!/usr/bin/env bash
# File store interop with curl, libcoap's coap-client and mosquitto_sub: a
# 1 MiB file uploaded with curl (multipart, declared sha256), its
# descriptor seen by mosquitto_sub, fetched by curl with a Range request
# and by coap-client -b 64 block-wise, byte-exact by sha256; a block-wise
# coap-client PUT read back with curl; size, quota, ACL and checksum
# refusals with clear errors over HTTP and CoAP; interrupted uploads (curl
# cut off, coap-client killed) leave nothing. Throughput of HTTP and CoAP
# block-wise transfers is printed (MB/s). interop.sh starts the hub with
# files.max_file_size HUB_FILES_MAX and files.quota_per_principal
# HUB_FILES_QUOTA.
set -euo pipefail

: "${HTTP_PORT:?}" "${COAP_PORT:?}" "${MQTT_PORT:?}" "${HUB_DATA:?}"
max=${HUB_FILES_MAX:-8388608}
quota=${HUB_FILES_QUOTA:-12582912}
client=""
for c in coap-client-notls coap-client coap-client-openssl coap-client-gnutls; do
	if command -v "$c" >/dev/null 2>&1; then client=$c; break; fi
done
[ -n "$client" ] || { echo "FAIL: no coap-client (install libcoap3-bin)"; exit 1; }
command -v mosquitto_sub >/dev/null || { echo "FAIL: no mosquitto_sub (install mosquitto-clients)"; exit 1; }

run=$$
api="http://127.0.0.1:$HTTP_PORT/api/v1"
coapbase="coap://127.0.0.1:$COAP_PORT"
dir="interop/files$run"
tmp=$(mktemp -d)
sub_pid=""
trap '[ -n "$sub_pid" ] && kill "$sub_pid" 2>/dev/null; rm -rf "$tmp"' EXIT

fail() { echo "FAIL: $*"; exit 1; }
sha() { sha256sum "$1" | cut -d' ' -f1; }
coap() { timeout 120 "$client" -B 60 "$@" 2>&1; }
# status METHOD URL [curl args...]: prints the HTTP status, the body goes to $tmp/body.
status() {
	local m=$1 u=$2
	shift 2
	curl -sS -o "$tmp/body" -w '%{http_code}' -X "$m" "$u" "$@"
}
json() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$@"; }
# mbps BYTES SECONDS
mbps() { python3 -c 'import sys; print("%.1f" % (int(sys.argv[1]) / float(sys.argv[2]) / 1e6))' "$1" "$2"; }
now() { date +%s.%N; }
elapsed() { python3 -c 'import sys; print("%.3f" % (float(sys.argv[2]) - float(sys.argv[1])))' "$1" "$2"; }

# bob may touch files/public/# only.
code=$(status POST "$api/users" -u admin:adminpw -H 'Content-Type: application/json' -d '{"name":"bob","password":"bobpw","role":"user"}')
[ "$code" = 201 ] || [ "$code" = 409 ] || fail "add bob: $code $(cat "$tmp/body")"
code=$(status PUT "$api/users/bob/acl" -u admin:adminpw -H 'Content-Type: application/json' \
	-d '[{"action":"all","filter":"files/public/#","allow":true}]')
[ "$code" = 200 ] || fail "bob's acl: $code $(cat "$tmp/body")"

# 1 MiB upload with curl; mosquitto_sub sees the descriptor.
head -c 1048576 /dev/urandom >"$tmp/fw.bin"
want=$(sha "$tmp/fw.bin")
timeout 20 mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -u alice -P alicepw -t "files/$dir/fw.bin" -C 1 -W 15 >"$tmp/desc.mqtt" &
sub_pid=$!
sleep 0.5 # the subscription in place
code=$(status POST "$api/files" -u alice:alicepw -F "name=$dir/fw.bin" -F "sha256=$want" -F "file=@$tmp/fw.bin;type=application/octet-stream")
[ "$code" = 201 ] || fail "curl upload: $code $(cat "$tmp/body")"
[ "$(json "$tmp/body" sha256)" = "$want" ] || fail "upload descriptor: $(cat "$tmp/body")"
wait "$sub_pid" || fail "mosquitto_sub saw no descriptor"
sub_pid=""
[ "$(json "$tmp/desc.mqtt" sha256)" = "$want" ] && [ "$(json "$tmp/desc.mqtt" size)" = 1048576 ] ||
	fail "mosquitto_sub got $(cat "$tmp/desc.mqtt")"
echo "ok: curl uploaded 1 MiB (multipart, sha256 declared); mosquitto_sub got its descriptor"

# curl: the whole file, a Range, ETag / If-None-Match.
code=$(status GET "$api/files/$dir/fw.bin" -u alice:alicepw -D "$tmp/headers")
[ "$code" = 200 ] && [ "$(sha "$tmp/body")" = "$want" ] || fail "curl GET: $code"
grep -qi "^etag: \"$want\"" "$tmp/headers" || fail "no ETag with the sha256: $(cat "$tmp/headers")"
code=$(status GET "$api/files/$dir/fw.bin" -u alice:alicepw -H 'Range: bytes=1000-1999')
dd if="$tmp/fw.bin" of="$tmp/slice" bs=1 skip=1000 count=1000 status=none
[ "$code" = 206 ] && cmp -s "$tmp/body" "$tmp/slice" || fail "curl Range GET: $code, $(wc -c <"$tmp/body") bytes"
code=$(status GET "$api/files/$dir/fw.bin" -u alice:alicepw -H "If-None-Match: \"$want\"")
[ "$code" = 304 ] || fail "If-None-Match: $code"
echo "ok: curl GET byte-exact with ETag = sha256, Range bytes=1000-1999 (206), If-None-Match (304)"

# coap-client: the descriptor as a retained value, the bytes block-wise.
out=$(coap -m get "$coapbase/ps/files/$dir/fw.bin")
case "$out" in *"\"sha256\":\"$want\""*) ;; *) fail "coap GET /ps/files: $out" ;; esac
t0=$(now)
coap -m get -b 64 -o "$tmp/coap64.bin" "$coapbase/files/$dir/fw.bin" >/dev/null
t1=$(now)
[ "$(sha "$tmp/coap64.bin")" = "$want" ] || fail "coap-client -b 64 GET: $(wc -c <"$tmp/coap64.bin") bytes, sha256 $(sha "$tmp/coap64.bin")"
echo "ok: coap-client GET /ps/files gave the descriptor; -b 64 block-wise GET of 1 MiB byte-exact ($(mbps 1048576 "$(elapsed "$t0" "$t1")") MB/s)"
t0=$(now)
coap -m get -b 1024 -o "$tmp/coap1024.bin" "$coapbase/files/$dir/fw.bin" >/dev/null
t1=$(now)
[ "$(sha "$tmp/coap1024.bin")" = "$want" ] || fail "coap-client -b 1024 GET"
echo "ok: coap-client -b 1024 GET of 1 MiB byte-exact ($(mbps 1048576 "$(elapsed "$t0" "$t1")") MB/s)"

# coap-client block-wise PUT, read back with curl.
head -c 300000 /dev/urandom >"$tmp/up.bin"
t0=$(now)
out=$(coap -m put -b 64 -t 42 -f "$tmp/up.bin" "$coapbase/files/$dir/from-coap.bin?sha256=$(sha "$tmp/up.bin")")
t1=$(now)
case "$out" in "" | 2.01* | 2.04*) ;; *) fail "coap-client -b 64 PUT: $out" ;; esac
code=$(status GET "$api/files/$dir/from-coap.bin" -u alice:alicepw)
[ "$code" = 200 ] && [ "$(sha "$tmp/body")" = "$(sha "$tmp/up.bin")" ] || fail "curl GET of the CoAP upload: $code"
echo "ok: coap-client -b 64 PUT of 300 kB read back byte-exact by curl ($(mbps 300000 "$(elapsed "$t0" "$t1")") MB/s)"

# HTTP throughput, the largest file the limit allows.
head -c "$max" /dev/urandom >"$tmp/max.bin"
t0=$(now)
code=$(status POST "$api/files?name=$dir/max.bin" -u alice:alicepw --data-binary "@$tmp/max.bin" -H 'Content-Type: application/octet-stream')
t1=$(now)
[ "$code" = 201 ] || fail "upload of $max bytes: $code $(cat "$tmp/body")"
up_rate=$(mbps "$max" "$(elapsed "$t0" "$t1")")
t0=$(now)
code=$(status GET "$api/files/$dir/max.bin" -u alice:alicepw)
t1=$(now)
[ "$code" = 200 ] && cmp -s "$tmp/body" "$tmp/max.bin" || fail "download of $max bytes: $code"
echo "ok: curl upload of $max bytes at $up_rate MB/s, download at $(mbps "$max" "$(elapsed "$t0" "$t1")") MB/s"

# What alice has stored, from the listing: the quota case goes one byte past it.
used=$(curl -sS -u alice:alicepw "$api/files?limit=1000" | python3 -c '
import json, sys
print(sum(f["size"] for f in json.load(sys.stdin)["files"] if f["uploader"] == "alice"))')
over=$((quota - used + 1))
[ "$over" -le "$max" ] || fail "alice uses $used bytes: a quota case would be over the size limit too"

# Refusals over HTTP.
head -c $((max + 1)) /dev/zero >"$tmp/toobig.bin"
code=$(status POST "$api/files?name=public/$dir/big.bin" -u bob:bobpw --data-binary "@$tmp/toobig.bin")
[ "$code" = 413 ] && grep -q "the limit is $max" "$tmp/body" || fail "too large: $code $(cat "$tmp/body")"
head -c "$over" /dev/zero >"$tmp/quota.bin"
code=$(status POST "$api/files?name=$dir/quota.bin" -u alice:alicepw --data-binary "@$tmp/quota.bin")
[ "$code" = 507 ] && grep -q "quota exceeded" "$tmp/body" || fail "quota: $code $(cat "$tmp/body")"
code=$(status POST "$api/files?name=$dir/bob.bin" -u bob:bobpw --data-binary x)
[ "$code" = 403 ] && grep -q "not authorized" "$tmp/body" || fail "ACL: $code $(cat "$tmp/body")"
code=$(status GET "$api/files/$dir/fw.bin" -u bob:bobpw)
[ "$code" = 403 ] || fail "ACL read: $code"
code=$(status POST "$api/files?name=public/$dir/c.bin&sha256=$want" -u bob:bobpw --data-binary x)
[ "$code" = 400 ] && grep -q "checksum mismatch" "$tmp/body" || fail "checksum: $code $(cat "$tmp/body")"
echo "ok: curl refusals: 413 over the size limit, 507 over the quota, 403 by the ACL, 400 for a checksum mismatch"


# Refusals over CoAP.
printf 'x' >"$tmp/x"
out=$(coap -m put -b 1024 -f "$tmp/toobig.bin" "$coapbase/files/public/$dir/big.bin?u=bob&p=bobpw")
case "$out" in 4.13*) ;; *) fail "coap too large: $out" ;; esac
out=$(coap -m put -b 1024 -f "$tmp/quota.bin" "$coapbase/files/$dir/quota.bin?u=alice&p=alicepw")
case "$out" in 4.03*quota*) ;; *) fail "coap quota: $out" ;; esac
out=$(coap -m put -f "$tmp/x" "$coapbase/files/$dir/bob.bin?u=bob&p=bobpw")
case "$out" in 4.03*"not authorized"*) ;; *) fail "coap ACL: $out" ;; esac
out=$(coap -m get "$coapbase/files/$dir/fw.bin?u=bob&p=bobpw")
case "$out" in 4.03*) ;; *) fail "coap ACL read: $out" ;; esac
out=$(coap -m put -f "$tmp/x" "$coapbase/files/public/$dir/c.bin?u=bob&p=bobpw&sha256=$want")
case "$out" in 4.00*"checksum mismatch"*) ;; *) fail "coap checksum: $out" ;; esac
echo "ok: coap-client refusals: 4.13 over the size limit, 4.03 over the quota and by the ACL, 4.00 for a checksum mismatch"
code=$(status DELETE "$api/files/$dir/max.bin" -u alice:alicepw)
[ "$code" = 204 ] || fail "DELETE: $code"

# Interrupted uploads leave nothing.
head -c 2000000 /dev/urandom >"$tmp/cut.bin"
curl -sS -o /dev/null -u alice:alicepw --limit-rate 200k --max-time 1 --data-binary "@$tmp/cut.bin" "$api/files?name=$dir/cut-http.bin" 2>/dev/null || true
timeout 1 "$client" -B 10 -m put -b 64 -f "$tmp/cut.bin" "$coapbase/files/$dir/cut-coap.bin" >/dev/null 2>&1 || true
code=$(status GET "$api/files/$dir/cut-http.bin" -u alice:alicepw)
[ "$code" = 404 ] || fail "cut HTTP upload: GET gave $code"
code=$(status GET "$api/files/$dir/cut-coap.bin" -u alice:alicepw)
[ "$code" = 404 ] || fail "cut CoAP upload: GET gave $code"
for _ in $(seq 100); do
	[ -z "$(ls -A "$HUB_DATA/files/tmp")" ] && break
	sleep 0.1
done
[ -z "$(ls -A "$HUB_DATA/files/tmp")" ] || fail "temporary files left: $(ls "$HUB_DATA/files/tmp")"
echo "ok: a cut curl upload and a killed coap-client PUT leave nothing (no file, no temporary file)"
