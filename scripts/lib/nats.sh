# Helpers shared by the cluster interop cases (scripts/interop.d/6*-nats*.sh):
# sourced, not run. Loopback only.

# stop_pid PID: TERM, then KILL after 5 s.
stop_pid() {
	[ -n "$1" ] || return 0
	kill -TERM "$1" 2>/dev/null || return 0
	for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
	kill -KILL "$1" 2>/dev/null || true
}

# free_port: a free TCP port on 127.0.0.1.
free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_port PORT: waits up to 5 s for a listener on 127.0.0.1:PORT.
wait_port() {
	for _ in $(seq 50); do
		python3 -c "import socket; socket.create_connection(('127.0.0.1', $1), 1)" 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

# start_nats PORT DIR: one Debian nats-server with JetStream (store in
# DIR); sets nats_pid and waits for its port.
start_nats() {
	nats-server -a 127.0.0.1 -p "$1" -js -sd "$2/nats" >"$2/nats.log" 2>&1 &
	nats_pid=$!
	wait_port "$1"
	echo "ok: $(nats-server --version) with JetStream on $1"
}

# wait_healthy NAME HTTP_PORT PID [TRIES]: waits for the hub's /healthz
# (TRIES tenths of a second, default 150), else prints its log and exits.
wait_healthy() {
	for _ in $(seq "${4:-150}"); do
		curl -fsS "http://127.0.0.1:$2/healthz" >/dev/null 2>&1 && return 0
		kill -0 "$3" 2>/dev/null || break
		sleep 0.1
	done
	echo "FAIL: hub $1 did not become healthy"; cat "$work/$1.log"; exit 1
}
