# Sourced by the interop and benchmark scripts, not run.

# free_ports N [tcp|udp|both]: N distinct loopback ports free a moment ago
# (for TCP by default) on one line, drawn from below the kernel's ephemeral
# range: a port taken with bind(0) comes from that range, and before the
# server that is given it binds, an outgoing connection (a NATS route, a
# client) may be handed the same port as its local end (see
# hubtest.FreePorts).
free_ports() {
	python3 - "$1" "${2:-tcp}" <<'PY'
import random, socket, sys
n = int(sys.argv[1])
kinds = {"tcp": [socket.SOCK_STREAM], "udp": [socket.SOCK_DGRAM],
         "both": [socket.SOCK_STREAM, socket.SOCK_DGRAM]}[sys.argv[2]]
try:
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except (OSError, ValueError, IndexError):
    low = 32768
ports, held = [], []
for _ in range(1000 * n):
    if len(ports) == n:
        break
    port = random.randrange(10000, low) if low - 10000 >= 1000 else 0
    mine = []
    try:
        for kind in kinds:
            s = socket.socket(socket.AF_INET, kind)
            mine.append(s)
            s.bind(("127.0.0.1", port))
            port = s.getsockname()[1]
    except OSError:
        for s in mine:
            s.close()
        continue
    held += mine  # held until all are drawn, so none comes twice
    ports.append(port)
for s in held:
    s.close()
if len(ports) < n:
    sys.exit("free_ports: no %d free loopback ports" % n)
print(*ports)
PY
}

# free_port [tcp|udp|both]: one such port.
free_port() { free_ports 1 "${1:-tcp}"; }
