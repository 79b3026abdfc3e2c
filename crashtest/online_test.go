package crashtest

import (
	"math/rand/v2"
	"strings"
	"testing"

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
