package crashtest

import (
	"context"
	"encoding/xml"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// onlineRounds is how many times each online crash run kills the hub.
const onlineRounds = 2

// TestCrashOnlineSubscriber: an MQTT persistent session that is connected
// and reading while the hub is killed with SIGKILL must, once it is back
// on its session, have received every message the hub acknowledged to a
// publisher: a copy in flight to a connected client is still the hub's to
// keep until the client acknowledges it. Duplicates are allowed at QoS 1
// and counted. (An XMPP subscriber without XEP-0198 has no such promise:
// nothing tells the hub a stanza arrived.)
func TestCrashOnlineSubscriber(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts the hub several times")
	}
	seed := crashSeed(t)
	t.Logf("seed %d (set CRASHTEST_SEED to repeat)", seed)
	rng := rand.New(rand.NewPCG(seed, 13))
	for _, k := range publisherKinds {
		if k.name == "xmpp" {
			continue // the publishing side is covered by TestCrashDelivery
		}
		t.Run("from-"+k.name, func(t *testing.T) {
			runOnlineCrash(t, k.name, k.dial, rng.Uint64())
		})
	}
}

func runOnlineCrash(t *testing.T, kind string, dial func(*hubProc, string) (publisher, error), seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 17))
	h := newHub(t, "")
	h.start()
	topic := "online/" + kind
	subID := "online-sub-" + kind
	qos := byte(1)
	if strings.HasSuffix(kind, "qos2") {
		qos = 2
	}
	// Every connection of the subscriber records into one channel, before
	// paho acknowledges (OrderMatters: the handler runs first).
	received := make(chan string, 20000)
	sub := dialOnlineSub(t, h, subID, received)
	if tok := sub.Subscribe(topic, qos, nil); !tok.WaitTimeout(ackTimeout) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	res := killRounds(t, h, kind, topic, dial, onlineRounds, rng, func() {
		sub.Disconnect(0) // its connection died with the hub
		sub = dialOnlineSub(t, h, subID, received)
	})
	h.start()
	dialOnlineSub(t, h, subID, received)
	dups := checkDelivery(t, "connected mqtt persistent session", received, res)
	t.Logf("%s: %d duplicates (QoS %d)", kind, dups, qos)
}

// dialOnlineSub connects a paho 3.1.1 client to its persistent session
// (clean session false); what it receives goes to ch.
func dialOnlineSub(t *testing.T, h *hubProc, id string, ch chan<- string) paho.Client {
	t.Helper()
	opts := paho.NewClientOptions().AddBroker("tcp://" + h.mqtt).SetClientID(id).
		SetCleanSession(false).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(ackTimeout).SetOrderMatters(true).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
			select {
			case ch <- string(m.Payload()):
			default:
			}
		})
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(ackTimeout) || tok.Error() != nil {
		t.Fatalf("mqtt subscriber %s connect: %v", id, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

// TestCrashOnlineXMPPSubscriber: an XMPP user with a topic subscription
// who is online with stream management (XEP-0198) while the hub is killed
// gets, across reconnections, every message the hub acknowledged: the hub
// takes a message off the user's durable queue only once the user's <a/>
// covers it. (On loopback, bytes the hub wrote reach the client even if
// the hub dies at once, so this checks the path end to end more than it
// can catch a missing wait for <a/>.)
func TestCrashOnlineXMPPSubscriber(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts the hub several times")
	}
	seed := crashSeed(t)
	t.Logf("seed %d (set CRASHTEST_SEED to repeat)", seed)
	rng := rand.New(rand.NewPCG(seed, 19))
	for _, k := range publisherKinds[:2] { // mqtt, rest (CoAP publishers: TestCrashOnlineSubscriber)
		t.Run("from-"+k.name, func(t *testing.T) {
			h := newHub(t, "")
			h.start()
			topic := "xonline/" + k.name
			xs := dialXMPPSub(t, h, "alice", "alicepw")
			xs.subscribeTopic(t, topic)
			xs.close()
			received := make(chan string, 20000)
			sub := dialXMPPSMSub(t, h, "alice", "alicepw", received)
			res := killRounds(t, h, k.name, topic, k.dial, onlineRounds, rand.New(rand.NewPCG(rng.Uint64(), 23)), func() {
				sub.close()
				sub = dialXMPPSMSub(t, h, "alice", "alicepw", received)
			})
			h.start()
			sub.close()
			dialXMPPSMSub(t, h, "alice", "alicepw", received)
			dups := checkDelivery(t, "online xmpp topic subscriber with XEP-0198", received, res)
			t.Logf("%s: %d duplicates", k.name, dups)
		})
	}
}

// xmppSMSub is an available XMPP user with stream management: it answers
// the hub's <r/> with <a h='N'/> counting the stanzas it handled, and
// records message bodies before acknowledging them.
type xmppSMSub struct {
	conn net.Conn
	done chan struct{}
}

func dialXMPPSMSub(t *testing.T, h *hubProc, user, pass string, bodies chan<- string) *xmppSMSub {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
	defer cancel()
	s, err := xmppLogin(ctx, h, user, pass)
	if err != nil {
		t.Fatal(err)
	}
	c := &xmppSMSub{conn: s.Conn(), done: make(chan struct{})}
	enabled := make(chan struct{})
	go c.read(enabled, bodies)
	t.Cleanup(c.close)
	if _, err := io.WriteString(c.conn, `<enable xmlns='urn:xmpp:sm:3'/>`); err != nil {
		t.Fatal(err)
	}
	select {
	case <-enabled:
	case <-time.After(ackTimeout):
		t.Fatal("xmpp: no <enabled/>")
	}
	// Available: the hub attaches the user's topic subscriptions.
	if _, err := io.WriteString(c.conn, `<presence/>`); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *xmppSMSub) read(enabled chan struct{}, bodies chan<- string) {
	defer close(c.done)
	d := xml.NewDecoder(c.conn)
	var handled uint64
	on := false
	for {
		tok, err := d.Token()
		if err != nil {
			return
		}
		start, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		switch start.Name.Local {
		case "enabled":
			on = true
			close(enabled)
		case "r":
			if _, err := io.WriteString(c.conn, `<a xmlns='urn:xmpp:sm:3' h='`+strconv.FormatUint(handled, 10)+`'/>`); err != nil {
				return
			}
		case "message", "presence", "iq":
			var v struct {
				Body string `xml:"body"`
			}
			if err := d.DecodeElement(&v, &start); err != nil {
				return
			}
			if on {
				handled++
			}
			if start.Name.Local == "message" && v.Body != "" {
				bodies <- v.Body
			}
			continue
		}
		if err := d.Skip(); err != nil {
			return
		}
	}
}

func (c *xmppSMSub) close() {
	_ = c.conn.Close()
	<-c.done
}
