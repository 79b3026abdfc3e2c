package gateway

import (
	"strings"
	"testing"
	"time"
)

// TestXMPPSharedBuckets: the XMPP adapter's buckets map to the cluster's,
// per-user ones as groups; others stay in the hub's store.
func TestXMPPSharedBuckets(t *testing.T) {
	for _, tc := range []struct {
		in, bucket, group string
		ok                bool
	}{
		{"xmpp-roster:alice", "xmpp-roster", "alice", true},
		{"xmpp-offline:bob", "xmpp-offline", "bob", true},
		{"xmpp-offline:", "xmpp-offline", "", true},
		{"xmpp-topics", "xmpp-topics", "", true},
		{"xmpp-jids", "xmpp-jids", "", true},
		{"xmpp-pubsub", "xmpp-pubsub", "", true},
		{"xmpp-rosterx", "", "", false},
		{"mqtt.sessions", "", "", false},
		{"history", "", "", false},
	} {
		b, g, ok := xmppShared{}.split(tc.in)
		if b != tc.bucket || g != tc.group || ok != tc.ok {
			t.Errorf("split(%q) = %q, %q, %v; want %q, %q, %v", tc.in, b, g, ok, tc.bucket, tc.group, tc.ok)
		}
	}
}

// TestXMPPClusterLivenessValidated: a negative interval is refused.
func TestXMPPClusterLivenessValidated(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{{0, ""}, {time.Second, ""}, {-time.Second, "xmpp.cluster_liveness -1s: must not be negative"}} {
		c := Defaults()
		c.XMPP.ClusterLiveness = tc.d
		err := c.validateXMPPCluster()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%v: %v, want %q", tc.d, err, tc.want)
		}
	}
}
