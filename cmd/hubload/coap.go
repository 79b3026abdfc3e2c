package main

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/pkg/runner/periodic"
	"github.com/plgd-dev/go-coap/v3/udp"
	"github.com/plgd-dev/go-coap/v3/udp/client"
)

// coapPublisher POSTs each payload to /ps/{topic}: a confirmable request
// whose 2.xx response it waits for at QoS >= 1, a non-confirmable one that
// it does not wait for at QoS 0 (as the hub's QoS table says).
type coapPublisher struct {
	cc   *client.Conn
	qos  byte
	stop chan struct{} // ends the client's periodic runner
}

// coapPath is the hub's CoAP resource for topic.
func coapPath(topic string) string { return "/ps/" + topic }

func (p coapPublisher) publish(ctx context.Context, topic string, payload []byte) (func(context.Context) error, error) {
	req, err := p.cc.NewPostRequest(ctx, coapPath(topic), message.AppOctets, bytes.NewReader(payload))
	if err != nil {
		return nil, fmt.Errorf("coap request: %w", err)
	}
	defer p.cc.ReleaseMessage(req)
	req.AddQuery("qos=" + strconv.Itoa(int(p.qos)))
	if p.qos == 0 {
		req.SetType(message.NonConfirmable)
		if err := p.cc.WriteMessage(req); err != nil {
			return nil, fmt.Errorf("coap NON POST: %w", err)
		}
		return nil, nil
	}
	req.SetType(message.Confirmable)
	resp, err := p.cc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("coap CON POST: %w", err)
	}
	defer p.cc.ReleaseMessage(resp)
	if code := resp.Code(); code < codes.Created || code > codes.Content {
		return nil, fmt.Errorf("coap POST %s: %v", coapPath(topic), code)
	}
	return nil, nil
}

func (p coapPublisher) close() {
	_ = p.cc.Close()
	<-p.cc.Done()
	close(p.stop)
}

// coapTransport publishes over CoAP/UDP to c.url and subscribes over MQTT at
// c.mqttURL.
func coapTransport(c *config) (transport, error) {
	u, err := url.Parse(c.url)
	if err != nil {
		return transport{}, fmt.Errorf("--url %q: %w", c.url, err)
	}
	if u.Scheme != "coap" || u.Host == "" {
		return transport{}, fmt.Errorf("--url %q: want coap://host:port", c.url)
	}
	addr := u.Host
	if u.Port() == "" {
		addr += ":5683"
	}
	return transport{
		newSubscriber: newMQTTSubscriber(c, c.mqttURL),
		newPublisher: func(ctx context.Context, _ int, onError func(error)) (publisher, error) {
			stop := make(chan struct{})
			cc, err := udp.Dial(addr,
				options.WithContext(context.WithoutCancel(ctx)),
				// The default runner outlives the connection by seconds, and
				// the default error handler prints to stdout.
				options.WithPeriodicRunner(periodic.New(stop, 100*time.Millisecond)),
				options.WithErrors(func(err error) { onError(fmt.Errorf("coap client: %w", err)) }),
			)
			if err != nil {
				close(stop)
				return nil, fmt.Errorf("coap dial %s: %w", addr, err)
			}
			return coapPublisher{cc: cc, qos: c.qos, stop: stop}, nil
		},
	}, nil
}
