# Sourced by the benchmark scripts, not run.

# build_upstream_hubload ROOT DIR: builds DIR/hubload-upstream, hubload
# against mochi-mqtt as published rather than the hub's patched copy
# (third_party/mochi-mqtt): from a copy of go.mod without its replace, in
# DIR, so that `hubload mochi` is the upstream baseline.
build_upstream_hubload() {
	sed '/^replace github.com\/mochi-mqtt\/server\/v2 /d' "$1/go.mod" >"$2/upstream.mod"
	cp "$1/go.sum" "$2/upstream.sum"
	(cd "$1" && GOFLAGS=-mod=mod go build -modfile "$2/upstream.mod" -o "$2/hubload-upstream" ./cmd/hubload)
}
