// Package xmpp is the hub's XMPP adapter: a client-to-server (c2s) server
// for chat users and devices (RFC 6120 streams with STARTTLS, SASL
// SCRAM-SHA-256, SCRAM-SHA-1 and PLAIN, resource binding; RFC 6121 roster,
// presence and messages), the topic service that maps topics to JIDs at
// topics.{domain}, XEP-0060 PubSub at pubsub.{domain}, XEP-0030 disco,
// XEP-0199 ping, XEP-0198 stream management, XEP-0050 ad-hoc commands to
// devices, and an XEP-0114 component mode that serves the topic JIDs from
// an existing XMPP server.
package xmpp
