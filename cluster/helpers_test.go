package cluster

import (
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// testJetStream starts a one-node embedded cluster named name and returns
// a JetStream connection to it; both end with the test.
func testJetStream(t *testing.T, name string) jetstream.JetStream {
	t.Helper()
	n, err := Start(Config{Name: name, Listen: "127.0.0.1:0", StoreDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Shutdown)
	nc, err := n.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}
