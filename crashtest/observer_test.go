package crashtest

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	piondtls "github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/options"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"
)

// dialDTLS opens a DTLS PSK session as device identity.
func dialDTLS(addr, identity string, key []byte) (*udpClient.Conn, error) {
	return dtls.Dial(addr, dtls.NewDTLSClientOptions(
		piondtls.WithPSK(func([]byte) ([]byte, error) { return key, nil }),
		piondtls.WithPSKIdentityHint([]byte(identity)),
		piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8),
	), options.WithErrors(func(error) {}))
}

// TestCoAPObserverAfterCrash: a CoAP device (DTLS PSK) observes its
// command topics with CON, goes away, QoS 1 commands are published over
// REST and acknowledged, the hub is killed with SIGKILL and restarted; when
// the device observes again from a new DTLS session it must get every
// command, in order.
func TestCoAPObserverAfterCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts the hub")
	}
	const n = 30
	ports := freePorts(t, 1)
	dtlsAddr := addr(ports[0])
	h := newHub(t, "", "--coaps-addr", dtlsAddr)
	psk := []byte("secret1")
	h.hubCmd("device", "add", "sensor1", "--protocol", "coap", "--psk", fmt.Sprintf("%x", psk), "--data-dir", h.dataDir)
	h.start()

	observe := func() (*udpClient.Conn, chan string) {
		cc, err := dialDTLS(dtlsAddr, "sensor1", psk)
		if err != nil {
			t.Fatalf("dtls: %v", err)
		}
		notes := make(chan string, 2*n)
		ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
		defer cancel()
		_, err = cc.Observe(ctx, "/ps/devices/sensor1/commands/+", func(m *pool.Message) {
			var b bytes.Buffer
			if m.Body() != nil {
				_, _ = b.ReadFrom(m.Body())
			}
			if b.Len() > 0 {
				select {
				case notes <- b.String():
				default:
				}
			}
		})
		if err != nil {
			_ = cc.Close()
			t.Fatalf("observe: %v", err)
		}
		return cc, notes
	}
	cc, _ := observe()
	_ = cc.Close() // away, without deregistering
	<-cc.Done()
	time.Sleep(300 * time.Millisecond)

	var acked []string
	for i := range n {
		p := fmt.Sprintf("cmd-%02d", i)
		code, err := restPublish(h, "devices/sensor1/commands/set", 1, p)
		if err != nil || code != 200 {
			t.Fatalf("REST publish %d: %d %v", i, code, err)
		}
		acked = append(acked, p)
	}
	h.kill9()
	h.start()

	cc, notes := observe()
	defer func() { _ = cc.Close(); <-cc.Done() }()
	var got []string
	for quiet := false; !quiet && len(got) < 2*n; {
		select {
		case m := <-notes:
			got = append(got, m)
		case <-time.After(3 * time.Second):
			quiet = true
		}
	}
	seen := map[string]bool{}
	var order []string
	for _, m := range got {
		if !seen[m] {
			seen[m] = true
			order = append(order, m)
		}
	}
	var lost []string
	for _, p := range acked {
		if !seen[p] {
			lost = append(lost, p)
		}
	}
	t.Logf("CoAP observer after kill -9: %d notifications, %d distinct of %d acknowledged", len(got), len(order), n)
	if len(lost) > 0 {
		t.Errorf("CoAP observer lost %d acknowledged commands, e.g. %v", len(lost), lost[:min(len(lost), 8)])
	}
	if !isSorted(order) {
		t.Errorf("CoAP observer got commands out of order: %s", strings.Join(order, " "))
	}
}

func isSorted(s []string) bool {
	for i := 1; i < len(s); i++ {
		if s[i] < s[i-1] {
			return false
		}
	}
	return true
}
