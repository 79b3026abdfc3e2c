package e2e

import (
	"bufio"
	"context"

	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

const wait = 5 * time.Second

// mqttMessage is what an MQTT subscriber received.
type mqttMessage struct {
	Topic    string
	Payload  string
	QoS      byte
	Retained bool
}

// mqttClient is a paho 3.1.1 client whose received messages go to a channel.
type mqttClient struct {
	paho.Client
	msgs chan mqttMessage
}

func dialMQTT(t *testing.T, addr, id, user, pass string, clean bool) *mqttClient {
	t.Helper()
	c := &mqttClient{msgs: make(chan mqttMessage, 1000)}
	opts := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
		SetCleanSession(clean).SetAutoReconnect(false).SetConnectTimeout(wait).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
			c.msgs <- mqttMessage{m.Topic(), string(m.Payload()), m.Qos(), m.Retained()}
		})
	if user != "" {
		opts.SetUsername(user).SetPassword(pass)
	}
	c.Client = paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("mqtt connect %s: %v", id, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

func (c *mqttClient) subscribe(t *testing.T, filter string, qos byte) {
	t.Helper()
	tok := c.Subscribe(filter, qos, nil)
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("mqtt subscribe %s: %v", filter, tok.Error())
	}
}

func (c *mqttClient) publish(t *testing.T, topic string, qos byte, retain bool, payload string) {
	t.Helper()
	tok := c.Publish(topic, qos, retain, payload)
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("mqtt publish %s: %v", topic, tok.Error())
	}
}

func (c *mqttClient) next(t *testing.T) mqttMessage {
	t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case <-time.After(wait):
		t.Fatal("mqtt: no message within", wait)
	}
	return mqttMessage{}
}

func (c *mqttClient) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case m := <-c.msgs:
		t.Fatalf("mqtt: unexpected message %+v", m)
	case <-time.After(d):
	}
}

func httpDo(t *testing.T, method, url, contentType, body string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// sseReader reads Server-Sent Events data lines from a subscribe stream.
type sseReader struct {
	data   chan string
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func openSSE(t *testing.T, url string) *sseReader {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("sse %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		cancel()
		t.Fatalf("sse %s: status %d", url, resp.StatusCode)
	}
	r := &sseReader{data: make(chan string, 100), cancel: cancel}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data:"); ok {
				r.data <- strings.TrimSpace(d)
			}
		}
	}()
	t.Cleanup(func() { r.cancel(); r.wg.Wait() })
	return r
}

func (r *sseReader) next(t *testing.T) string {
	t.Helper()
	select {
	case d := <-r.data:
		return d
	case <-time.After(wait):
		t.Fatal("sse: no event within", wait)
	}
	return ""
}

func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type (
	pahoClient  = paho.Client
	pahoMessage = paho.Message
)
