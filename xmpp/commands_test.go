package xmpp

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/devices"
)

type presenceEvent struct {
	id     string
	online bool
}

type presenceRecorder struct {
	mu     sync.Mutex
	events []presenceEvent
}

func (p *presenceRecorder) DevicePresence(_ context.Context, id, protocol string, online bool, _ time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if protocol == "xmpp" {
		p.events = append(p.events, presenceEvent{id, online})
	}
}

func (p *presenceRecorder) get() []presenceEvent {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]presenceEvent(nil), p.events...)
}

func TestDeviceCommand(t *testing.T) {
	var hub *testHub
	h := startHub(t, func(c *Config) {
		c.DeviceCommand = func(ctx context.Context, cmd adapters.Command) (json.RawMessage, error) {
			return hub.a.SendCommand(ctx, cmd)
		}
	})
	hub = h
	// devices.{domain} is in the server's disco items.
	watcher := connect(t, h, "alice", "alicepw")
	if typ, inner := watcher.iq(t, `<iq type='get' id='di' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>`); typ != "result" || !strings.Contains(inner, "devices.localhost") {
		t.Errorf("disco#items of the server: %s %s", typ, inner)
	}
	rec := &presenceRecorder{}
	h.a.SetPresenceSink(rec)
	ctx := context.Background()

	_, err := h.a.SendCommand(ctx, adapters.Command{ID: "r0", DeviceID: "sensor1", Name: "reboot"})
	if !errors.Is(err, adapters.ErrDeviceOffline) {
		t.Fatalf("offline device: %v, want ErrDeviceOffline", err)
	}
	dev := connectWith(t, h, "sensor1", "sensor1pw", func(v rx) string {
		if v.Type != "set" || !strings.Contains(v.Inner, "http://jabber.org/protocol/commands") {
			return ""
		}
		reply := `{"rebooted":true}`
		if strings.Contains(v.Inner, `node="fail"`) {
			return `<iq type='error' id='` + v.ID + `' to='` + v.From + `'><error type='cancel'><bad-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>`
		}
		switch {
		case strings.Contains(v.Inner, `node="slow"`):
			time.Sleep(700 * time.Millisecond)
			reply = `"slow-done"`
		case !strings.Contains(v.Inner, `{&#34;delay&#34;:5}`) && !strings.Contains(v.Inner, `{"delay":5}`):
			reply = `"params missing: ` + strings.ReplaceAll(v.Inner, "'", "") + `"`
		}
		return `<iq type='result' id='` + v.ID + `' to='` + v.From + `'><command xmlns='http://jabber.org/protocol/commands' node='reboot' status='completed' sessionid='s1'><x xmlns='jabber:x:data' type='result'><field var='result'><value>` + reply + `</value></field></x></command></iq>`
	})
	_ = dev
	deadline := time.Now().Add(5 * time.Second)
	for len(rec.get()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if ev := rec.get(); len(ev) != 1 || ev[0] != (presenceEvent{"sensor1", true}) {
		t.Fatalf("presence events %v, want sensor1 online", ev)
	}

	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	got, err := h.a.SendCommand(cctx, adapters.Command{ID: "r1", DeviceID: "sensor1", Name: "reboot", Params: json.RawMessage(`{"delay":5}`)})
	if err != nil {
		t.Fatalf("SendCommand: %v", err)
	}
	if string(got) != `{"rebooted":true}` {
		t.Errorf("reply %s", got)
	}
	var re *devices.RefusedError
	if _, err := h.a.SendCommand(cctx, adapters.Command{ID: "r2", DeviceID: "sensor1", Name: "fail"}); !errors.As(err, &re) || re.HTTPStatus() != http.StatusBadRequest || re.Reason != "bad-request" {
		t.Errorf("failing command: %v, want a refusal with 400", err)
	}

	// A chat user with a command rule runs the same command on the
	// device's JID; one without is refused.
	if err := h.st.SetACL(ctx, "alice", []adapters.ACLRule{{Action: "command", Filter: "+", Allow: true}}); err != nil {
		t.Fatal(err)
	}
	alice := connect(t, h, "alice", "alicepw")
	bob := connect(t, h, "bob", "bobpw")
	if typ, out := bob.iq(t, `<iq type='set' id='b1' to='sensor1@devices.localhost'><command xmlns='http://jabber.org/protocol/commands' node='reboot'/></iq>`); typ != "error" || !strings.Contains(out, "forbidden") {
		t.Errorf("command by a user without a command rule: %s %s", typ, out)
	}

	// Nobody but the device can answer its command.
	type result struct {
		reply json.RawMessage
		err   error
	}
	slow := make(chan result, 1)
	go func() {
		r, err := h.a.SendCommand(cctx, adapters.Command{ID: "r9", DeviceID: "sensor1", Name: "slow"})
		slow <- result{r, err}
	}()
	time.Sleep(200 * time.Millisecond)
	alice.send(t, `<iq type='result' id='cmd-r9' to='localhost'><command xmlns='http://jabber.org/protocol/commands' node='slow' status='completed'/></iq>`)
	if r := <-slow; r.err != nil || string(r.reply) != `"slow-done"` {
		t.Errorf("slow command: %s, %v; want the device's own answer", r.reply, r.err)
	}
	typ, out := alice.iq(t, `<iq type='set' id='c1' to='sensor1@devices.localhost'><command xmlns='http://jabber.org/protocol/commands' node='reboot' action='execute'><x xmlns='jabber:x:data' type='submit'><field var='params'><value>{"delay":5}</value></field></x></command></iq>`)
	if typ != "result" || !strings.Contains(out, "completed") || !strings.Contains(out, "rebooted") {
		t.Errorf("chat user command: %s %s", typ, out)
	}
	typ, out = alice.iq(t, `<iq type='set' id='c2' to='nobody@devices.localhost'><command xmlns='http://jabber.org/protocol/commands' node='reboot'/></iq>`)
	if typ != "error" || !strings.Contains(out, "recipient-unavailable") {
		t.Errorf("command to an absent device: %s %s", typ, out)
	}
	typ, out = alice.iq(t, `<iq type='set' id='c3' to='sensor1@devices.localhost'><command xmlns='http://jabber.org/protocol/commands' node='reboot'><x xmlns='jabber:x:data' type='submit'><field var='params'><value>{not json</value></field></x></command></iq>`)
	if typ != "error" || !strings.Contains(out, "bad-request") {
		t.Errorf("bad params: %s %s", typ, out)
	}

	_ = dev.s.Close()
	deadline = time.Now().Add(5 * time.Second)
	for len(rec.get()) < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if ev := rec.get(); len(ev) != 2 || ev[1] != (presenceEvent{"sensor1", false}) {
		t.Errorf("presence events %v, want sensor1 offline last", ev)
	}
}
