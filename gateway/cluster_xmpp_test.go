package gateway

import "testing"

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
