package mqtt

import (
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/hubsmith/hub/broker"
)

// envelopeFromPacket builds the bus envelope of an MQTT PUBLISH received
// from a client: topic, payload, QoS, retain flag and the MQTT 5
// properties the envelope carries (content type, message expiry, response
// topic, correlation data, user properties). The payload is shared, not
// copied: neither mochi nor the bus changes it.
func envelopeFromPacket(pk *packets.Packet, origin broker.Origin, now time.Time) *broker.Envelope {
	e := &broker.Envelope{
		Topic:         pk.TopicName,
		Payload:       pk.Payload,
		QoS:           pk.FixedHeader.Qos,
		Retain:        pk.FixedHeader.Retain,
		Origin:        origin,
		Time:          now,
		ContentType:   pk.Properties.ContentType,
		ResponseTopic: pk.Properties.ResponseTopic,
	}
	if e.Payload == nil {
		e.Payload = []byte{}
	}
	if len(pk.Properties.CorrelationData) > 0 {
		e.CorrelationData = pk.Properties.CorrelationData
	}
	if pk.Properties.MessageExpiryInterval > 0 {
		e.Expiry = now.Add(time.Duration(pk.Properties.MessageExpiryInterval) * time.Second)
	}
	if n := len(pk.Properties.User); n > 0 {
		e.Properties = make([]broker.Property, n, n+1)
		for i, u := range pk.Properties.User {
			e.Properties[i] = broker.Property{Key: u.Key, Value: u.Val}
		}
	}
	if pk.Properties.PayloadFormatFlag && pk.Properties.PayloadFormat == 1 {
		e.Properties = append(e.Properties, broker.Property{Key: PayloadFormatProperty, Value: "utf-8"})
	}
	return e
}

// PayloadFormatProperty is the envelope property that carries an MQTT 5
// payload format indicator of 1 (the payload is UTF-8 text) to MQTT 5
// subscribers; it is not an MQTT user property.
const PayloadFormatProperty = "mqtt:payload-format"

// packetFromEnvelope builds the PUBLISH that carries a bus envelope to MQTT
// subscribers. It reports false when the envelope has already expired. The
// remaining lifetime becomes the MQTT 5 message expiry interval, rounded
// up to whole seconds. Strings MQTT cannot carry (not UTF-8, holding NUL,
// longer than 65535 bytes) are left out rather than corrupting the packet;
// dropped counts them.
func packetFromEnvelope(e *broker.Envelope, now time.Time) (pk packets.Packet, dropped int, ok bool) {
	pk = packets.Packet{
		FixedHeader: packets.FixedHeader{
			Type:   packets.Publish,
			Qos:    min(e.QoS, 2),
			Retain: e.Retain,
		},
		TopicName: e.Topic,
		Payload:   e.Payload,
		Created:   now.Unix(),
	}
	if pk.FixedHeader.Qos > 0 {
		// The inline client never runs a QoS handshake, but PUBLISH
		// validation wants a packet id at QoS >= 1.
		pk.PacketID = 1
	}
	if !e.Expiry.IsZero() {
		left := e.Expiry.Sub(now)
		if left <= 0 {
			return pk, 0, false
		}
		secs := math.Ceil(left.Seconds())
		if secs > math.MaxUint32 {
			secs = math.MaxUint32
		}
		pk.Properties.MessageExpiryInterval = uint32(secs)
	}
	keep := func(s string) bool {
		if mqttString(s) {
			return true
		}
		dropped++
		return false
	}
	if e.ContentType != "" && keep(e.ContentType) {
		pk.Properties.ContentType = e.ContentType
	}
	if e.ResponseTopic != "" && keep(e.ResponseTopic) {
		if broker.ValidateTopic(e.ResponseTopic) == nil {
			pk.Properties.ResponseTopic = e.ResponseTopic
		} else {
			dropped++
		}
	}
	if len(e.CorrelationData) > 0 {
		if len(e.CorrelationData) <= math.MaxUint16 {
			pk.Properties.CorrelationData = e.CorrelationData
		} else {
			dropped++
		}
	}
	for _, p := range e.Properties {
		if p.Key == PayloadFormatProperty {
			pk.Properties.PayloadFormat, pk.Properties.PayloadFormatFlag = 1, true
			continue
		}
		if keep(p.Key) && keep(p.Value) {
			pk.Properties.User = append(pk.Properties.User, packets.UserProperty{Key: p.Key, Val: p.Value})
		}
	}
	return pk, dropped, true
}

// mqttString reports whether s can be an MQTT UTF-8 encoded string: valid
// UTF-8, no U+0000, at most 65535 bytes.
func mqttString(s string) bool {
	return len(s) <= math.MaxUint16 && utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}
