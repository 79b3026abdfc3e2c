package hubtest

import (
	"net"
	"strconv"
	"testing"
)

func TestFreePorts(t *testing.T) {
	low := ephemeralLow()
	ports := FreePorts(t, 20)
	seen := map[int]bool{}
	for _, p := range ports {
		if seen[p] {
			t.Fatalf("port %d twice in %v", p, ports)
		}
		seen[p] = true
		if low-lowestPort >= 1000 && (p < lowestPort || p >= low) {
			t.Errorf("port %d outside [%d, %d), the range below the ephemeral ports", p, lowestPort, low)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			t.Fatalf("port %d not free for TCP: %v", p, err)
		}
		pc, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			t.Fatalf("port %d not free for UDP: %v", p, err)
		}
		_ = ln.Close()
		_ = pc.Close()
	}
}

func TestFreePortsWithoutRoomBelowTheEphemeralRange(t *testing.T) {
	ports, err := freePorts(3, lowestPort+10)
	if err != nil {
		t.Fatal(err)
	}
	if len(ports) != 3 || ports[0] == 0 {
		t.Fatalf("kernel-chosen ports: %v", ports)
	}
}
