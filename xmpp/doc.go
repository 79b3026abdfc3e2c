// Package xmpp is the hub's XMPP adapter: a client-to-server (c2s) server
// for chat users and devices (RFC 6120 streams with STARTTLS, SASL
// SCRAM-SHA-256, SCRAM-SHA-1 and PLAIN, resource binding; RFC 6121 roster,
// presence and messages), the topic service that maps topics to JIDs at
// topics.{domain} (and at the domains of Config.JIDRules, see JIDRule),
// XEP-0060 PubSub at pubsub.{domain}, XEP-0030 disco,
// XEP-0199 ping, XEP-0198 stream management, XEP-0050 ad-hoc commands to
// devices, files (XEP-0363 HTTP File Upload at upload.{domain}, XEP-0096
// SI file transfer to the hub's JIDs over XEP-0047 IBB or XEP-0065 SOCKS5
// through the hub's own proxy at proxy.{domain}, XEP-0066 links to chat
// users; see files.go), and an XEP-0114 component mode that serves the
// topic JIDs from an existing XMPP server.
//
// The server is written over encoding/xml rather than on mellium's server
// side: the stanza reader (reader.go) bounds stanza size and nesting,
// refuses DTDs, comments and processing instructions, and rate-limits each
// connection; SCRAM (scram.go) runs against the store's StoredKey and
// ServerKey. mellium's client is what the tests log in with.
//
// State kept in the store's key/value buckets:
//   - "xmpp-roster:{user}": the user's roster, one JSON item per contact;
//   - "xmpp-topics" and "xmpp-pubsub": topic and PubSub subscriptions,
//     keyed "{bare JID} {topic or filter}";
//   - "xmpp-jids": topic subscriptions made through a JIDRule's JID, keyed
//     "{bare JID} {topic JID}" (bus subscription "xmpp-jid:{user}:{topic
//     JID}"), so that messages come from the JID the user subscribed to;
//   - "xmpp-offline:{user}": chat messages and subscription requests for a
//     user with no available resource, bounded by Config.OfflineLimit.
//
// Topic and PubSub subscriptions are durable bus subscriptions
// ("xmpp:{user}:{topic}", "xmpp-ps:{user}:{filter}", QoS 1), attached while
// the user has an available resource and detached otherwise, so the bus
// keeps what arrives meanwhile and delivers it in order at the next login.
// With XEP-0198 on, a QoS 1 envelope counts as delivered only once the
// client acknowledged the stanza; until then it is resent on resumption, or
// stays queued on the bus if the session ends.
package xmpp
