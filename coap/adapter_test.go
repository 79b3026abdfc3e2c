package coap

import (
	"bytes"
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestNewValidation(t *testing.T) {
	t.Parallel()
	bus, err := broker.NewMemory(broker.MemoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	auth := adapters.NewAuth(testUsers, nil)
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no bus", Config{Auth: auth, Addr: "127.0.0.1:0"}, "Bus"},
		{"no listener", Config{Bus: bus, Auth: auth}, "Addr or DTLSAddr"},
		{"no auth", Config{Bus: bus, Addr: "127.0.0.1:0"}, "Auth"},
		{"bad addr", Config{Bus: bus, Auth: auth, Addr: "nope"}, "Addr"},
		{"dtls without psk", Config{Bus: bus, Auth: auth, DTLSAddr: "127.0.0.1:0"}, "PSK"},
		{"bad dtls addr", Config{Bus: bus, Auth: auth, DTLSAddr: "x"}, "DTLSAddr"},
		{"block size", Config{Bus: bus, Auth: auth, Addr: "127.0.0.1:0", BlockSize: 3000}, "BlockSize 3000"},
		{"block size not power", Config{Bus: bus, Auth: auth, Addr: "127.0.0.1:0", BlockSize: 100}, "BlockSize 100"},
		{"negative payload", Config{Bus: bus, Auth: auth, Addr: "127.0.0.1:0", MaxPayload: -1}, "MaxPayload"},
		{"retransmit", Config{Bus: bus, Auth: auth, Addr: "127.0.0.1:0", MaxRetransmit: 99}, "MaxRetransmit"},
		{"ack timeout", Config{Bus: bus, Auth: auth, Addr: "127.0.0.1:0", AckTimeout: -time.Second}, "AckTimeout"},
	}
	for _, c := range cases {
		_, err := New(c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want one naming %q", c.name, err, c.want)
		}
	}
	if _, err := New(Config{Bus: bus, Auth: auth, Addr: DefaultAddr}); err != nil {
		t.Errorf("minimal config refused: %v", err)
	}
}

func TestPostPublishes(t *testing.T) {
	t.Parallel()
	e := start(t, nil)
	cc := e.dial(t, "")
	c := e.collect(t, "#")
	cases := []struct {
		name    string
		non     bool
		opts    []message.Option
		cf      message.MediaType
		wantQoS byte
		retain  bool
		ctype   string
	}{
		{name: "con is qos 1", cf: message.AppJSON, wantQoS: 1, ctype: "application/json"},
		{name: "non is qos 0", non: true, cf: message.TextPlain, wantQoS: 0, ctype: "text/plain;charset=utf-8"},
		{name: "query qos", opts: []message.Option{query("qos=2")}, cf: message.AppCBOR, wantQoS: 2, ctype: "application/cbor"},
		{name: "query qos emqx style", non: true, opts: []message.Option{query("qos=qos1")}, cf: message.AppCBOR, wantQoS: 1, ctype: "application/cbor"},
		{name: "query retain", opts: []message.Option{query("retain=true"), query("qos=0")}, cf: message.AppOctets, retain: true, ctype: "application/octet-stream"},
		{name: "senml", cf: 110, wantQoS: 1, ctype: "application/senml+json"},
		{name: "senml cbor", cf: 112, wantQoS: 1, ctype: "application/senml+cbor"},
	}
	for i, tc := range cases {
		payload := []byte("payload " + tc.name)
		req, err := cc.NewPostRequest(ctx5(t), "/ps/post/"+string(rune('a'+i)), tc.cf, bytes.NewReader(payload), tc.opts...)
		if err != nil {
			t.Fatal(err)
		}
		if tc.non {
			req.SetType(message.NonConfirmable)
		}
		resp, err := cc.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if resp.Code() != codes.Changed {
			t.Fatalf("%s: code %v, want 2.04", tc.name, resp.Code())
		}
		got := c.next(t)
		if got.Topic != "post/"+string(rune('a'+i)) || !bytes.Equal(got.Payload, payload) || got.QoS != tc.wantQoS ||
			got.Retain != tc.retain || got.ContentType != tc.ctype {
			t.Errorf("%s: envelope %q %q qos %d retain %v ct %q", tc.name, got.Topic, got.Payload, got.QoS, got.Retain, got.ContentType)
		}
		if got.Origin.Protocol != broker.ProtoCoAP || got.Origin.Remote == "" || got.Origin.ClientID != got.Origin.Remote ||
			got.Origin.Node != "test" || got.Origin.Principal != "" {
			t.Errorf("%s: origin %+v", tc.name, got.Origin)
		}
	}
	// ?c= names the client, as in EMQX.
	if _, err := cc.Post(ctx5(t), "/ps/post/c", message.TextPlain, strings.NewReader("x"), query("c=dev7")); err != nil {
		t.Fatal(err)
	}
	if got := c.next(t); got.Origin.ClientID != "dev7" {
		t.Errorf("client id %q, want dev7", got.Origin.ClientID)
	}
}

func TestPutGetDelete(t *testing.T) {
	t.Parallel()
	e := start(t, nil)
	cc := e.dial(t, "")
	ctx := ctx5(t)
	resp, err := cc.Get(ctx, "/ps/never/published")
	if err != nil {
		t.Fatal(err)
	}
	if resp.Code() != codes.NotFound {
		t.Fatalf("GET of a never-published topic: %v, want 4.04", resp.Code())
	}
	steps := []struct {
		payload string
		want    codes.Code
	}{{"21.5", codes.Created}, {"22.0", codes.Changed}}
	for _, s := range steps {
		resp, err := cc.Put(ctx, "/ps/room/temp", message.TextPlain, strings.NewReader(s.payload))
		if err != nil {
			t.Fatal(err)
		}
		if resp.Code() != s.want {
			t.Fatalf("PUT %s: %v, want %v", s.payload, resp.Code(), s.want)
		}
	}
	ret, err := e.bus.Retained(ctx, "room/temp")
	if err != nil || len(ret) != 1 || string(ret[0].Payload) != "22.0" {
		t.Fatalf("retained after PUT: %v %v", ret, err)
	}
	resp, err = cc.Get(ctx, "/ps/room/temp")
	if err != nil {
		t.Fatal(err)
	}
	if resp.Code() != codes.Content || string(body(t, resp)) != "22.0" {
		t.Fatalf("GET: %v %q", resp.Code(), body(t, resp))
	}
	if cf, err := resp.ContentFormat(); err != nil || cf != message.TextPlain {
		t.Fatalf("GET content format %v %v", cf, err)
	}
	// A POST without retain leaves nothing to read: the bus's retained
	// value is the one answer, as in REST and XMPP; with retain=true it is.
	if _, err := cc.Post(ctx, "/ps/room/hum", message.AppJSON, strings.NewReader(`{"h":40}`)); err != nil {
		t.Fatal(err)
	}
	resp, err = cc.Get(ctx, "/ps/room/hum")
	if err != nil || resp.Code() != codes.NotFound {
		t.Fatalf("GET after a POST without retain: %v %v, want 4.04", resp.Code(), err)
	}
	if _, err := cc.Post(ctx, "/ps/room/hum", message.AppJSON, strings.NewReader(`{"h":41}`), query("retain=true")); err != nil {
		t.Fatal(err)
	}
	resp, err = cc.Get(ctx, "/ps/room/hum")
	if err != nil || resp.Code() != codes.Content || string(body(t, resp)) != `{"h":41}` {
		t.Fatalf("GET after a retained POST: %v %v", resp.Code(), err)
	}
	resp, err = cc.Delete(ctx, "/ps/room/temp")
	if err != nil || resp.Code() != codes.Deleted {
		t.Fatalf("DELETE: %v %v", resp.Code(), err)
	}
	if ret, _ := e.bus.Retained(ctx, "room/temp"); len(ret) != 0 {
		t.Fatalf("retained after DELETE: %v", ret)
	}
	resp, err = cc.Get(ctx, "/ps/room/temp")
	if err != nil || resp.Code() != codes.NotFound {
		t.Fatalf("GET after DELETE: %v %v", resp.Code(), err)
	}
	// PUT after DELETE creates again.
	resp, err = cc.Put(ctx, "/ps/room/temp", message.TextPlain, strings.NewReader("1"))
	if err != nil || resp.Code() != codes.Created {
		t.Fatalf("PUT after DELETE: %v %v", resp.Code(), err)
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	// 0.0.0.0 is not loopback: credentials are required.
	e := start(t, func(c *Config) { c.Addr = "0.0.0.0:0"; c.MaxPayload = 512 })
	_, port, _ := strings.Cut(e.addr, "]:")
	if port == "" {
		_, port, _ = strings.Cut(e.addr, ":")
	}
	cc := e.dial(t, "127.0.0.1:"+port)
	alice := []message.Option{query("u=alice"), query("p=alicepw")}
	sensor := []message.Option{query("u=sensor1"), query("p=sensor1pw")}
	type req struct {
		name   string
		method codes.Code
		path   string
		cf     int
		body   string
		opts   []message.Option
		want   codes.Code
	}
	cases := []req{
		{"anonymous refused", codes.POST, "/ps/a", 0, "x", nil, codes.Unauthorized},
		{"wrong password", codes.POST, "/ps/a", 0, "x", []message.Option{query("u=alice"), query("p=nope")}, codes.Unauthorized},
		{"unknown user", codes.POST, "/ps/a", 0, "x", []message.Option{query("u=mallory"), query("p=x")}, codes.Unauthorized},
		{"alice allowed", codes.POST, "/ps/a", 0, "x", alice, codes.Changed},
		{"long query names", codes.POST, "/ps/a", 0, "x", []message.Option{query("clientid=c1"), query("username=alice"), query("password=alicepw")}, codes.Changed},
		{"alice not on $hub", codes.POST, "/ps/$hub/x", 0, "x", alice, codes.Forbidden},
		{"device outside its tree", codes.POST, "/ps/other/x", 0, "x", sensor, codes.Forbidden},
		{"device in its tree", codes.POST, "/ps/devices/sensor1/t", 0, "x", sensor, codes.Changed},
		{"device may not observe others", codes.GET, "/ps/other/x", -1, "", sensor, codes.Forbidden},
		{"not under /ps", codes.POST, "/foo/a", 0, "x", alice, codes.BadRequest},
		{"no topic", codes.POST, "/ps", 0, "x", alice, codes.BadRequest},
		{"wildcard publish", codes.POST, "/ps/a/+", 0, "x", alice, codes.BadRequest},
		{"wildcard put", codes.PUT, "/ps/a/#", 0, "x", alice, codes.BadRequest},
		{"wildcard delete", codes.DELETE, "/ps/#", -1, "", alice, codes.BadRequest},
		{"bad filter", codes.GET, "/ps/a/b#", -1, "", alice, codes.BadRequest},
		{"bad qos", codes.POST, "/ps/a", 0, "x", append([]message.Option{query("qos=7")}, alice...), codes.BadRequest},
		{"bad retain", codes.POST, "/ps/a", 0, "x", append([]message.Option{query("retain=maybe")}, alice...), codes.BadRequest},
		{"unknown content format", codes.POST, "/ps/a", 9999, "x", alice, codes.UnsupportedMediaType},
		{"too large", codes.POST, "/ps/a", 0, strings.Repeat("x", 600), alice, codes.RequestEntityTooLarge},
		{"too large block-wise", codes.POST, "/ps/a", 0, strings.Repeat("x", 5000), alice, codes.RequestEntityTooLarge},
		{"never published", codes.GET, "/ps/none", -1, "", alice, codes.NotFound},
		{"published, not retained", codes.GET, "/ps/a", -1, "", alice, codes.NotFound},
		{"retained for the next case", codes.PUT, "/ps/a", 0, "x", alice, codes.Created},
		{"method", codes.FETCH, "/ps/a", 0, "x", alice, codes.MethodNotAllowed},
		{"not acceptable", codes.GET, "/ps/a", -1, "", append([]message.Option{{ID: message.Accept, Value: []byte{50}}}, alice...), codes.NotAcceptable},
	}
	for _, c := range cases {
		var r *pool.Message
		var err error
		switch c.method {
		case codes.GET:
			r, err = cc.NewGetRequest(ctx5(t), c.path, c.opts...)
		case codes.DELETE:
			r, err = cc.NewDeleteRequest(ctx5(t), c.path, c.opts...)
		case codes.PUT:
			r, err = cc.NewPutRequest(ctx5(t), c.path, message.MediaType(c.cf), strings.NewReader(c.body), c.opts...)
		case codes.FETCH:
			r, err = cc.NewFetchRequest(ctx5(t), c.path, message.MediaType(c.cf), strings.NewReader(c.body), c.opts...)
		default:
			r, err = cc.NewPostRequest(ctx5(t), c.path, message.MediaType(c.cf), strings.NewReader(c.body), c.opts...)
		}
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		resp, err := cc.Do(r)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if resp.Code() != c.want {
			t.Errorf("%s: %v %q, want %v", c.name, resp.Code(), body(t, resp), c.want)
		}
		if c.want >= codes.BadRequest && c.want != codes.NotFound && len(body(t, resp)) == 0 && c.name != "too large block-wise" {
			t.Errorf("%s: no diagnostic payload", c.name)
		}
		if c.want == codes.RequestEntityTooLarge {
			if v, err := resp.GetOptionUint32(message.Size1); err != nil || v != 512 {
				t.Errorf("%s: Size1 %d %v, want 512", c.name, v, err)
			}
		}
	}
}

func TestWellKnownCore(t *testing.T) {
	t.Parallel()
	e := start(t, nil)
	cc := e.dial(t, "")
	ctx := ctx5(t)
	if _, err := cc.Put(ctx, "/ps/lab/temp", message.AppJSON, strings.NewReader("1")); err != nil {
		t.Fatal(err)
	}
	if _, err := cc.Post(ctx, "/ps/lab/x%23y", message.TextPlain, strings.NewReader("2"), query("retain=true")); err != nil {
		t.Fatal(err)
	}
	resp, err := cc.Get(ctx, "/.well-known/core")
	if err != nil {
		t.Fatal(err)
	}
	if cf, _ := resp.ContentFormat(); resp.Code() != codes.Content || cf != message.AppLinkFormat {
		t.Fatalf("code %v cf %v", resp.Code(), cf)
	}
	got := string(body(t, resp))
	for _, want := range []string{`</ps>;rt="core.ps";ct=40`, `</ps/lab/temp>;rt="core.ps.data";obs;ct=50`} {
		if !strings.Contains(got, want) {
			t.Errorf("link format %q lacks %q", got, want)
		}
	}
	r, _ := cc.NewPostRequest(ctx, "/.well-known/core", message.TextPlain, strings.NewReader("x"))
	if resp, err := cc.Do(r); err != nil || resp.Code() != codes.MethodNotAllowed {
		t.Fatalf("POST /.well-known/core: %v %v", resp.Code(), err)
	}
}

// TestDedup sends one CON POST twice with the same message id, as a
// client whose ACK was lost does: both get the ACK, the bus sees one
// publish.
func TestDedup(t *testing.T) {
	t.Parallel()
	e := start(t, nil)
	c := e.collect(t, "dedup/#")
	r := e.raw(t)
	m := rawMsg{typ: message.Confirmable, code: codes.POST, mid: 4242, token: []byte{1, 2}, path: "/ps/dedup/x", observe: -1, cf: 0, payload: []byte("once")}
	for i := 0; i < 2; i++ {
		// Like a client that lost the ACK: retransmit until one comes.
		var ack *pool.Message
		for try := 0; ack == nil && try < 10; try++ {
			r.send(m)
			ack = r.recv(300 * time.Millisecond)
		}
		if ack == nil || ack.Type() != message.Acknowledgement || ack.MessageID() != 4242 || ack.Code() != codes.Changed {
			t.Fatalf("reply %d: %v", i, ack)
		}
	}
	if got := c.next(t); string(got.Payload) != "once" {
		t.Fatalf("payload %q", got.Payload)
	}
	c.none(t, 300*time.Millisecond)
	// A new message id is a new publish.
	m.mid = 4243
	r.send(m)
	r.mustRecv()
	c.next(t)
}

func TestStopIdempotentAndHealth(t *testing.T) {
	t.Parallel()
	e := start(t, nil)
	if err := e.a.Healthy(); err != nil {
		t.Fatal(err)
	}
	if e.a.Name() != "coap" {
		t.Fatal(e.a.Name())
	}
	if err := e.a.Stop(ctx5(t)); err != nil {
		t.Fatal(err)
	}
	if e.a.Healthy() == nil {
		t.Fatal("healthy after stop")
	}
	if err := e.a.Start(ctx5(t)); err == nil {
		t.Fatal("restart accepted")
	}
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	e := start(t, func(c *Config) { c.Registerer = reg })
	cc := e.dial(t, "")
	if _, err := cc.Post(ctx5(t), "/ps/m/x", message.TextPlain, strings.NewReader("1")); err != nil {
		t.Fatal(err)
	}
	if _, err := cc.Get(ctx5(t), "/ps/m/none"); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += " " + l.GetValue()
			}
			got[key] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	if got["hub_coap_requests_total 2.04 POST"] != 1 || got["hub_coap_requests_total 4.04 GET"] != 1 {
		t.Errorf("requests metric: %v", got)
	}
	if got["hub_coap_published_total"] != 1 {
		t.Errorf("published metric: %v", got)
	}
	if _, err := New(Config{Bus: e.bus, Auth: adapters.NewAuth(testUsers, nil), Addr: "127.0.0.1:0", Registerer: reg}); err == nil {
		t.Error("a second registration on one registry was accepted")
	}
}

// TestBusUnavailable: a publish the bus refuses (closed, or storage
// failing) is 5.03 Service Unavailable.
func TestBusUnavailable(t *testing.T) {
	t.Parallel()
	e := start(t, nil)
	cc := e.dial(t, "")
	if err := e.bus.Close(); err != nil {
		t.Fatal(err)
	}
	resp, err := cc.Post(ctx5(t), "/ps/closed/x", message.TextPlain, strings.NewReader("1"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Code() != codes.ServiceUnavailable {
		t.Fatalf("POST to a closed bus: %v, want 5.03", resp.Code())
	}
}

// TestChattyClientRecycled: a UDP client that sends more than
// recycleAfter requests gets its endpoint state renewed without losing
// or repeating a publish.
func TestChattyClientRecycled(t *testing.T) {
	t.Parallel()
	e := start(t, nil)
	var got atomic.Int64
	sub, err := e.bus.Subscribe(context.Background(), broker.SubscribeOptions{Filters: []string{"chatty/#"}, QoS: 1, QueueLen: 1 << 14},
		func(context.Context, *broker.Envelope) error { got.Add(1); return nil })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	cc := e.dial(t, "")
	n := recycleAfter + 100
	var first *connState
	for i := 0; i < n; i++ {
		resp, err := cc.Post(ctx5(t), "/ps/chatty/t", message.TextPlain, strings.NewReader("x"))
		if err != nil || resp.Code() != codes.Changed {
			t.Fatalf("POST %d: %v %v", i, resp, err)
		}
		if i == 0 {
			e.a.mu.Lock()
			for _, cs := range e.a.conns {
				first = cs
			}
			e.a.mu.Unlock()
		}
	}
	waitFor(t, "every publish", func() bool { return got.Load() >= int64(n) })
	time.Sleep(100 * time.Millisecond)
	if got.Load() != int64(n) {
		t.Fatalf("%d publishes for %d POSTs", got.Load(), n)
	}
	e.a.mu.Lock()
	_, still := e.a.conns[first.cc]
	e.a.mu.Unlock()
	if still {
		t.Fatal("the endpoint state was not renewed")
	}
}
