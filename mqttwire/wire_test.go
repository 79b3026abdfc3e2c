package mqttwire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

// readerSize is the lean client's read buffer: large enough that the
// hot-path packets are read in place, small enough that the tests cover
// the scratch path too.
const readerSize = 4096

func reader(b []byte) *bufio.Reader {
	return bufio.NewReaderSize(bytes.NewReader(b), readerSize)
}

// readOne reads the one packet in b, failing unless exactly one is there.
func readOne(t *testing.T, b []byte) Packet {
	t.Helper()
	br := reader(b)
	var scratch []byte
	p, err := ReadPacket(br, &scratch, MaxRemainingLength)
	if err != nil {
		t.Fatalf("read % x: %v", b, err)
	}
	if _, err := ReadPacket(br, &scratch, MaxRemainingLength); !errors.Is(err, io.EOF) {
		t.Fatalf("after the packet: %v, want EOF", err)
	}
	return p
}

// TestRoundTrip encodes every packet type, reads it back and parses it:
// the fields come back.
func TestRoundTrip(t *testing.T) {
	t.Parallel()
	big := bytes.Repeat([]byte("p"), readerSize+1000) // read through scratch
	tests := []struct {
		name  string
		enc   []byte
		typ   byte
		parse func(Packet) (any, error)
		want  any
	}{
		{"connect 3.1.1 persistent", AppendConnect(nil, ConnectSpec{ClientID: "c", KeepAlive: 60}), Connect, parseConnect,
			ConnectSpec{Version: V311, ClientID: "c", KeepAlive: 60}},
		{"connect 3.1.1 user password", AppendConnect(nil, ConnectSpec{ClientID: "c", Username: "u", Password: "p", Clean: true}), Connect, parseConnect,
			ConnectSpec{Version: V311, ClientID: "c", Username: "u", Password: "p", Clean: true}},
		{"connect 3.1.1 drops a password without a user", AppendConnect(nil, ConnectSpec{ClientID: "c", Password: "p"}), Connect, parseConnect,
			ConnectSpec{Version: V311, ClientID: "c"}},
		{"connect 5 properties and will", AppendConnect(nil, ConnectSpec{Version: V5, ClientID: "w", Username: "alice", Password: "pw", Clean: true,
			Properties: []byte{0x11, 0, 0, 0x0e, 0x10}, Will: &Will{Topic: "gone", Payload: []byte("bye"), QoS: 1, Retain: true, Properties: []byte{0x18, 0, 0, 0, 5}}}), Connect, parseConnect,
			ConnectSpec{Version: V5, ClientID: "w", Username: "alice", Password: "pw", Clean: true,
				Properties: []byte{0x11, 0, 0, 0x0e, 0x10}, Will: &Will{Topic: "gone", Payload: []byte("bye"), QoS: 1, Retain: true, Properties: []byte{0x18, 0, 0, 0, 5}}}},
		{"connect 5 password alone", AppendConnect(nil, ConnectSpec{Version: V5, ClientID: "c", Password: "p"}), Connect, parseConnect,
			ConnectSpec{Version: V5, ClientID: "c", Password: "p", Properties: []byte{}}},
		{"subscribe 3.1.1", AppendSubscribe(nil, V311, 1, 1, "a/b"), Subscribe, parseSubscribe(V311),
			SubscribeView{ID: 1, Filters: []string{"a/b"}, Options: []byte{1}}},
		{"subscribe 5 many", AppendSubscribe(nil, V5, 9, 0, "x/+", "y/#"), Subscribe, parseSubscribe(V5),
			SubscribeView{ID: 9, Filters: []string{"x/+", "y/#"}, Options: []byte{0, 0}}},
		{"publish 3.1.1 qos 0", AppendPublish(nil, PublishHeader{Topic: "a/b"}, []byte("hi")), Publish, parsePublish(V311),
			PublishView{Topic: []byte("a/b"), Payload: []byte("hi")}},
		{"publish 3.1.1 qos 2 dup retain", AppendPublish(nil, PublishHeader{Topic: "t", QoS: 2, ID: 65535, Dup: true, Retain: true}, []byte("x")), Publish, parsePublish(V311),
			PublishView{QoS: 2, Dup: true, Retain: true, ID: 65535, Topic: []byte("t"), Payload: []byte("x")}},
		{"publish 3.1.1 larger than the read buffer", AppendPublish(nil, PublishHeader{Topic: strings.Repeat("t", 300), QoS: 1, ID: 9}, big), Publish, parsePublish(V311),
			PublishView{QoS: 1, ID: 9, Topic: []byte(strings.Repeat("t", 300)), Payload: big}},
		{"publish 5 properties", AppendPublish(nil, PublishHeader{Version: V5, Topic: "e/x", QoS: 1, ID: 3, Properties: []byte{0x02, 0, 0, 0, 1}}, []byte("short")), Publish, parsePublish(V5),
			PublishView{QoS: 1, ID: 3, Topic: []byte("e/x"), Properties: []byte{0x02, 0, 0, 0, 1}, Payload: []byte("short")}},
		{"publish 5 empty topic no properties", AppendPublish(nil, PublishHeader{Version: V5}, nil), Publish, parsePublish(V5),
			PublishView{Topic: []byte{}, Properties: []byte{}, Payload: []byte{}}},
		{"puback", AppendAck(nil, Puback, 0x0102), Puback, parseAck(V311), AckView{Type: Puback, ID: 0x0102}},
		{"pubrec", AppendAck(nil, Pubrec, 5), Pubrec, parseAck(V311), AckView{Type: Pubrec, ID: 5}},
		{"pubrel", AppendAck(nil, Pubrel, 5), Pubrel, parseAck(V311), AckView{Type: Pubrel, ID: 5}},
		{"pubcomp", AppendAck(nil, Pubcomp, 5), Pubcomp, parseAck(V311), AckView{Type: Pubcomp, ID: 5}},
		{"puback 5 reason", AppendAckCode(nil, Puback, 7, 0x97), Puback, parseAck(V5), AckView{Type: Puback, ID: 7, Code: 0x97}},
		{"pubrel 5 reason", AppendAckCode(nil, Pubrel, 7, 0x92), Pubrel, parseAck(V5), AckView{Type: Pubrel, ID: 7, Code: 0x92}},
		{"pingreq", AppendPingreq(nil), Pingreq, parseEmpty, 0},
		{"disconnect", AppendDisconnect(nil), Disconnect, parseDisconnect(V311), byte(0)},
		{"disconnect 5 reason", AppendDisconnectCode(nil, 0x8e), Disconnect, parseDisconnect(V5), byte(0x8e)},
		// The server's packets, written out: the client codec parses them.
		{"connack 3.1.1", []byte{0x20, 2, 1, 0}, Connack, parseConnack(V311), ConnackView{Version: V311, SessionPresent: true}},
		{"connack 5 refused", []byte{0x20, 6, 0, 0x87, 3, 0x21, 0, 9}, Connack, parseConnack(V5), ConnackView{Version: V5, Code: 0x87, Properties: []byte{0x21, 0, 9}}},
		{"suback 3.1.1", []byte{0x90, 4, 0, 1, 1, 0x80}, Suback, parseSuback(V311), subackView{1, []byte{1, 0x80}}},
		{"suback 5", []byte{0x90, 5, 0, 2, 0, 0, 0x97}, Suback, parseSuback(V5), subackView{2, []byte{0, 0x97}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := readOne(t, tc.enc)
			if p.Type != tc.typ {
				t.Fatalf("type %s, want %s", Name(p.Type), Name(tc.typ))
			}
			got, err := tc.parse(p)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

type subackView struct {
	id    uint16
	codes []byte
}

func parseConnect(p Packet) (any, error) { return ParseConnect(p) }
func parseEmpty(p Packet) (any, error)   { return len(p.Body), nil }
func parseSubscribe(v byte) func(Packet) (any, error) {
	return func(p Packet) (any, error) { return ParseSubscribe(p, v) }
}
func parsePublish(v byte) func(Packet) (any, error) {
	return func(p Packet) (any, error) { return ParsePublish(p, v) }
}
func parseAck(v byte) func(Packet) (any, error) {
	return func(p Packet) (any, error) { return ParseAck(p, v) }
}
func parseDisconnect(v byte) func(Packet) (any, error) {
	return func(p Packet) (any, error) { return ParseDisconnect(p, v) }
}
func parseConnack(v byte) func(Packet) (any, error) {
	return func(p Packet) (any, error) { return ParseConnack(p, v) }
}
func parseSuback(v byte) func(Packet) (any, error) {
	return func(p Packet) (any, error) {
		id, codes, err := ParseSuback(p, v)
		return subackView{id, codes}, err
	}
}

// TestEncodings pins the bytes of the encoders against the specification
// where a round trip alone would not notice (both sides wrong the same way).
func TestEncodings(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		got  []byte
		want []byte
	}{
		{"subscribe", AppendSubscribe(nil, V311, 1, 1, "a/b"), []byte{0x82, 8, 0, 1, 0, 3, 'a', '/', 'b', 1}},
		{"subscribe 5", AppendSubscribe(nil, V5, 1, 0, "a"), []byte{0x82, 7, 0, 1, 0, 0, 1, 'a', 0}},
		{"puback", AppendAck(nil, Puback, 0x0102), []byte{0x40, 2, 1, 2}},
		{"pubrel has flags 0010", AppendAck(nil, Pubrel, 5), []byte{0x62, 2, 0, 5}},
		{"puback 5 reason", AppendAckCode(nil, Puback, 5, 0x10), []byte{0x40, 3, 0, 5, 0x10}},
		{"persistent connect", AppendConnect(nil, ConnectSpec{ClientID: "c", KeepAlive: 60}), []byte{0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 0, 0, 60, 0, 1, 'c'}},
		{"connect 5 clean", AppendConnect(nil, ConnectSpec{Version: V5, ClientID: "c", Clean: true}), []byte{0x10, 14, 0, 4, 'M', 'Q', 'T', 'T', 5, 2, 0, 0, 0, 0, 1, 'c'}},
		{"publish 5 qos 1", AppendPublish(nil, PublishHeader{Version: V5, Topic: "t", QoS: 1, ID: 1}, []byte("x")), []byte{0x32, 7, 0, 1, 't', 0, 1, 0, 'x'}},
		{"pingreq", AppendPingreq(nil), []byte{0xc0, 0}},
		{"disconnect", AppendDisconnect(nil), []byte{0xe0, 0}},
		{"disconnect 5 reason", AppendDisconnectCode(nil, 4), []byte{0xe0, 1, 4}},
		{"var int 127", AppendVarInt(nil, 127), []byte{0x7f}},
		{"var int 128", AppendVarInt(nil, 128), []byte{0x80, 0x01}},
		{"var int max", AppendVarInt(nil, MaxRemainingLength), []byte{0xff, 0xff, 0xff, 0x7f}},
		{"string", AppendString(nil, "ab"), []byte{0, 2, 'a', 'b'}},
	}
	for _, tc := range tests {
		if !bytes.Equal(tc.got, tc.want) {
			t.Errorf("%s: % x, want % x", tc.name, tc.got, tc.want)
		}
	}
	for _, n := range []int{0, 127, 128, 16383, 16384, 2097151, 2097152, MaxRemainingLength} {
		if l := len(AppendVarInt(nil, n)); l != varIntLen(n) {
			t.Errorf("varIntLen(%d) = %d, encoded in %d", n, varIntLen(n), l)
		}
	}
}

// TestRejects: each malformed input is refused with an error saying why,
// wrapping ErrMalformed where the bytes themselves are wrong.
func TestRejects(t *testing.T) {
	t.Parallel()
	const max = 1 << 16
	tests := []struct {
		name      string
		in        []byte
		parse     func(Packet) (any, error)
		want      string
		malformed bool
	}{
		{"five-byte remaining length", []byte{0x30, 0xff, 0xff, 0xff, 0xff, 0x01}, nil, "longer than 4 bytes", true},
		{"too large", append([]byte{0x30}, AppendVarInt(nil, max+1)...), nil, "more than", true},
		{"truncated length", []byte{0x30, 0x80}, nil, "unexpected EOF", false},
		{"truncated body", []byte{0x40, 2, 0}, nil, "unexpected EOF", false},
		{"publish qos 3", []byte{0x36, 3, 0, 1, 'a'}, parsePublish(V311), "QoS 3", true},
		{"publish without topic", []byte{0x30, 1, 0}, parsePublish(V311), "topic cut short", true},
		{"publish topic past the end", []byte{0x30, 3, 0, 5, 'a'}, parsePublish(V311), "topic of 5 bytes", true},
		{"qos1 publish without id", []byte{0x32, 3, 0, 1, 'a'}, parsePublish(V311), "without a packet id", true},
		{"qos1 publish id 0", []byte{0x32, 5, 0, 1, 'a', 0, 0}, parsePublish(V311), "packet id 0", true},
		{"publish 5 without properties", []byte{0x30, 3, 0, 1, 'a'}, parsePublish(V5), "properties length cut short", true},
		{"publish 5 properties past the end", []byte{0x30, 5, 0, 1, 'a', 9, 1}, parsePublish(V5), "properties of 9 bytes", true},
		{"not a publish", []byte{0x40, 2, 0, 1}, parsePublish(V311), "want PUBLISH, got PUBACK", false},
		{"short puback", []byte{0x40, 1, 0}, parseAck(V311), "of 1 bytes", true},
		{"3.1.1 puback with a code", []byte{0x40, 3, 0, 1, 0}, parseAck(V311), "of 3 bytes", true},
		{"5 puback trailing", []byte{0x40, 5, 0, 1, 0, 0, 9}, parseAck(V5), "after the PUBACK properties", true},
		{"not an ack", []byte{0x20, 2, 0, 0}, parseAck(V311), "want an acknowledgement", false},
		{"not a connack", []byte{0x40, 2, 0, 1}, parseConnack(V311), "want CONNACK", false},
		{"long connack", []byte{0x20, 3, 0, 0, 0}, parseConnack(V311), "CONNACK of 3 bytes", true},
		{"connack 5 without properties", []byte{0x20, 2, 0, 0}, parseConnack(V5), "properties length cut short", true},
		{"short suback", []byte{0x90, 2, 0, 1}, parseSuback(V311), "SUBACK of 2 bytes", true},
		{"suback 5 without codes", []byte{0x90, 3, 0, 1, 0}, parseSuback(V5), "without codes", true},
		{"3.1.1 disconnect with a body", []byte{0xe0, 1, 0}, parseDisconnect(V311), "want 0", true},
		{"connect bad name", []byte{0x10, 6, 0, 4, 'M', 'Q', 'X', 'X'}, parseConnect, "protocol name", true},
		{"connect trailing", []byte{0x10, 14, 0, 4, 'M', 'Q', 'T', 'T', 4, 0, 0, 60, 0, 1, 'c', 0}, parseConnect, "after the CONNECT payload", true},
		{"subscribe without filters", []byte{0x82, 2, 0, 1}, parseSubscribe(V311), "without filters", true},
		{"subscribe filter without options", []byte{0x82, 5, 0, 1, 0, 1, 'a'}, parseSubscribe(V311), "without options", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var scratch []byte
			p, err := ReadPacket(reader(tc.in), &scratch, max)
			if err == nil && tc.parse != nil {
				_, err = tc.parse(p)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			if errors.Is(err, ErrMalformed) != tc.malformed {
				t.Errorf("errors.Is(%v, ErrMalformed) = %v", err, !tc.malformed)
			}
		})
	}
}

func TestConnackErr(t *testing.T) {
	t.Parallel()
	tests := []struct {
		c    ConnackView
		want string
	}{
		{ConnackView{Version: V311}, ""},
		{ConnackView{Version: V311, Code: 5}, "return code 5 (not authorized)"},
		{ConnackView{Version: V311, Code: 4}, "bad user name or password"},
		{ConnackView{Version: V311, Code: 99}, "unknown"},
		{ConnackView{Version: V5, Code: 0x97}, "reason code 0x97 (quota exceeded)"},
	}
	for _, tc := range tests {
		err := tc.c.Err()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: %v, want %q", tc.c, err, tc.want)
		}
	}
}
