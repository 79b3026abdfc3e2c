// Package e2e holds the hub's end-to-end tests: a whole hub started
// in-process on loopback ports (hubtest), driven across protocols by real
// clients — paho for MQTT, go-coap's client, mellium for XMPP, net/http.
package e2e
