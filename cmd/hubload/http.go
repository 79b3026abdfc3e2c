package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// httpPublisher POSTs each payload to /api/v1/topics/{topic}?qos=N and
// expects a 2xx answer.
type httpPublisher struct {
	client   *http.Client
	base     string
	qos      byte
	username string
	password string
}

// topicURL is the hub's REST resource for topic: each level path-escaped.
func topicURL(base, topic string, qos byte) string {
	levels := strings.Split(topic, "/")
	for i, l := range levels {
		levels[i] = url.PathEscape(l)
	}
	return strings.TrimSuffix(base, "/") + "/api/v1/topics/" + strings.Join(levels, "/") + "?qos=" + strconv.Itoa(int(qos))
}

func (p *httpPublisher) publish(ctx context.Context, topic string, payload []byte) (func(context.Context) error, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, topicURL(p.base, topic, p.qos), bytes.NewReader(payload))
	if err != nil {
		return nil, fmt.Errorf("http request: %w", err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	if p.username != "" {
		req.SetBasicAuth(p.username, p.password)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("http POST: %w", err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	_ = resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("http POST %s: %s: %s", req.URL.Path, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil, nil
}

func (p *httpPublisher) close() { p.client.CloseIdleConnections() }

// httpTransport publishes over HTTP to c.url and subscribes over MQTT at
// c.mqttURL.
func httpTransport(c *config) (transport, error) {
	u, err := url.Parse(c.url)
	if err != nil {
		return transport{}, fmt.Errorf("--url %q: %w", c.url, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return transport{}, fmt.Errorf("--url %q: want http://host:port", c.url)
	}
	return transport{
		newSubscriber: newMQTTSubscriber(c, c.mqttURL),
		newPublisher: func(context.Context, int, func(error)) (publisher, error) {
			// One connection per publisher, kept alive, as a device would.
			tr := &http.Transport{MaxIdleConnsPerHost: 1, IdleConnTimeout: time.Minute}
			return &httpPublisher{client: &http.Client{Transport: tr, Timeout: 30 * time.Second}, base: c.url, qos: c.qos, username: c.username, password: c.password}, nil
		},
	}, nil
}
