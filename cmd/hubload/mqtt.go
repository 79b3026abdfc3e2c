package main

import (
	"cmp"
	"context"
	"fmt"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// mqttOptions returns paho options for one load client: clean session, no
// automatic reconnection (a dropped connection must show as loss, not be
// papered over), MQTT 3.1.1.
func mqttOptions(c *config, url, clientID string, onLost func(error)) *paho.ClientOptions {
	o := paho.NewClientOptions().
		AddBroker(url).
		SetClientID(clientID).
		SetCleanSession(true).
		SetProtocolVersion(4).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(c.connectTimeout).
		SetKeepAlive(30 * time.Second).
		SetOrderMatters(true).
		SetConnectionLostHandler(func(_ paho.Client, err error) { onLost(fmt.Errorf("connection lost: %w", err)) })
	if c.username != "" {
		o.SetUsername(c.username).SetPassword(c.password)
	}
	return o
}

// waitToken waits for t or ctx.
func waitToken(ctx context.Context, t paho.Token) error {
	select {
	case <-t.Done():
		return t.Error()
	case <-ctx.Done():
		return fmt.Errorf("waiting for the broker: %w", ctx.Err())
	}
}

type mqttClient struct{ c paho.Client }

func (m mqttClient) close() { m.c.Disconnect(100) }

func connectMQTT(ctx context.Context, o *paho.ClientOptions) (paho.Client, error) {
	cl := paho.NewClient(o)
	if err := waitToken(ctx, cl.Connect()); err != nil {
		cl.Disconnect(0)
		return nil, fmt.Errorf("connect: %w", err)
	}
	return cl, nil
}

// MQTT clients hubload can use (--mqtt-client).
const (
	mqttClientLean = "lean"
	mqttClientPaho = "paho"
)

// newMQTTSubscriber returns a transport.newSubscriber for MQTT subscribers
// on url at c.qos, of the client c.mqttClient names.
func newMQTTSubscriber(c *config, url string) func(context.Context, int, string, func([]byte), func(error)) (subscriber, error) {
	if c.mqttClient == mqttClientPaho {
		return newPahoSubscriber(c, url)
	}
	return newLeanSubscriber(c, url)
}

// mqttTransport publishes and subscribes over MQTT at c.url with the client
// c.mqttClient names.
func mqttTransport(c *config) transport {
	if c.mqttClient == mqttClientPaho {
		return pahoTransport(c)
	}
	return leanTransport(c)
}

// newPahoSubscriber returns a transport.newSubscriber for paho MQTT
// subscribers on url at c.qos.
func newPahoSubscriber(c *config, url string) func(context.Context, int, string, func([]byte), func(error)) (subscriber, error) {
	return func(ctx context.Context, idx int, topic string, deliver func([]byte), onLost func(error)) (subscriber, error) {
		id := fmt.Sprintf("%s-sub-%d", c.clientPrefix, idx)
		o := mqttOptions(c, url, id, onLost)
		if c.persistent {
			o.SetCleanSession(false)
		}
		cl, err := connectMQTT(ctx, o)
		if err != nil {
			return nil, err
		}
		tok := cl.Subscribe(topic, c.qos, func(_ paho.Client, m paho.Message) { deliver(m.Payload()) })
		if err := waitToken(ctx, tok); err != nil {
			cl.Disconnect(0)
			return nil, fmt.Errorf("subscribe %q: %w", topic, err)
		}
		st, ok := tok.(*paho.SubscribeToken)
		if ok {
			if code, found := st.Result()[topic]; found && code == 0x80 {
				cl.Disconnect(0)
				return nil, fmt.Errorf("subscribe %q: refused by the broker", topic)
			}
		}
		if c.persistent {
			return persistentSub{mqttClient{cl}, mqttOptions(c, url, id, func(error) {})}, nil
		}
		return mqttClient{cl}, nil
	}
}

// persistentSub is a subscriber with a persistent session, which close
// removes from the broker (a clean-session connection ends it).
type persistentSub struct {
	mqttClient
	clean *paho.ClientOptions
}

func (p persistentSub) close() {
	p.mqttClient.close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if cl, err := connectMQTT(ctx, p.clean); err == nil {
		cl.Disconnect(50)
	}
}

type mqttPublisher struct {
	mqttClient
	qos byte
}

func (p mqttPublisher) publish(_ context.Context, topic string, payload []byte) (func(context.Context) error, error) {
	tok := p.c.Publish(topic, p.qos, false, payload)
	return func(ctx context.Context) error { return waitToken(ctx, tok) }, nil
}

// pahoTransport publishes and subscribes over MQTT at c.url with paho.
func pahoTransport(c *config) transport {
	return transport{
		newSubscriber: newPahoSubscriber(c, cmp.Or(c.subURL, c.url)),
		newPublisher: func(ctx context.Context, idx int, onLost func(error)) (publisher, error) {
			cl, err := connectMQTT(ctx, mqttOptions(c, c.url, fmt.Sprintf("%s-pub-%d", c.clientPrefix, idx), onLost))
			if err != nil {
				return nil, err
			}
			return mqttPublisher{mqttClient{cl}, c.qos}, nil
		},
	}
}
