package hubtest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// FreePorts returns n distinct loopback ports that were free for both TCP
// and UDP a moment ago, for servers whose ports must be known before they
// start: a cluster's routes, a hub run as another process.
//
// The ports come from below the kernel's ephemeral range. A port taken with
// ":0" comes from that range, and between the check and the server's bind an
// outgoing connection (a NATS route dialling its peers, a test client) may be
// given the same port as its local end: the server then fails with "address
// already in use". That happened in CI to a hub whose cluster took 46 s to
// form before its XMPP listener was bound.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	ports, err := freePorts(n, ephemeralLow())
	if err != nil {
		t.Fatal(err)
	}
	return ports
}

// lowestPort is the bottom of the range FreePorts draws from: clear of the
// well-known and the commonly configured ports.
const lowestPort = 10000

// freePorts draws n ports at random from [lowestPort, below), falling back
// to the kernel's choice (":0") when that range is too small to draw from.
func freePorts(n, below int) ([]int, error) {
	var ports []int
	var hold []func()
	defer func() {
		for _, release := range hold {
			release()
		}
	}()
	for tries := 0; len(ports) < n; tries++ {
		if tries > 100*n {
			return nil, fmt.Errorf("hubtest: no %d free loopback ports after %d tries", n, tries)
		}
		p := 0
		if below-lowestPort >= 1000 {
			p = lowestPort + rand.IntN(below-lowestPort)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		p = ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			_ = ln.Close()
			continue
		}
		hold = append(hold, func() { _ = ln.Close(); _ = pc.Close() })
		ports = append(ports, p)
	}
	return ports, nil
}

// ephemeralLow is the first port of the kernel's ephemeral range (Linux's
// default 32768 where the range cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	low, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return low
}
