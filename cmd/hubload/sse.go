package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// sseEvent is the part of the hub's SSE event data (rest.EnvelopeJSON)
// that hubload reads.
type sseEvent struct {
	Payload         string `json:"payload"`
	PayloadEncoding string `json:"payload_encoding"`
}

// decodeSSEData returns the payload of one SSE "data:" line's JSON.
func decodeSSEData(data []byte) ([]byte, error) {
	var e sseEvent
	if err := json.Unmarshal(data, &e); err != nil {
		return nil, fmt.Errorf("sse: event data: %w", err)
	}
	switch e.PayloadEncoding {
	case "":
		return []byte(e.Payload), nil
	case "base64":
		b, err := base64.StdEncoding.DecodeString(e.Payload)
		if err != nil {
			return nil, fmt.Errorf("sse: base64 payload: %w", err)
		}
		return b, nil
	}
	return nil, fmt.Errorf("sse: payload encoding %q", e.PayloadEncoding)
}

// sseSub is one open event stream.
type sseSub struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func (s *sseSub) close() {
	s.cancel()
	<-s.done
}

// sseTransport: MQTT publishers on c.mqttURL, SSE subscribers on
// c.url/api/v1/subscribe?filter={topic}&qos={qos}.
func sseTransport(c *config) (transport, error) {
	u, err := url.Parse(c.url)
	if err != nil {
		return transport{}, fmt.Errorf("--url %q: %w", c.url, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return transport{}, fmt.Errorf("--url %q: want http://host:port", c.url)
	}
	mq := mqttTransport(&config{
		url: c.mqttURL, connectTimeout: c.connectTimeout, qos: c.qos,
		username: c.username, password: c.password, clientPrefix: c.clientPrefix,
		mqttClient: c.mqttClient, inflight: c.inflight, size: c.size, textPayload: c.textPayload,
	})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: c.subscribers}}
	return transport{
		newPublisher: mq.newPublisher,
		newSubscriber: func(ctx context.Context, _ int, topic string, deliver func([]byte), onError func(error)) (subscriber, error) {
			sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
			q := url.Values{"filter": {topic}, "qos": {strconv.Itoa(int(c.qos))}}
			req, err := http.NewRequestWithContext(sctx, http.MethodGet, strings.TrimSuffix(c.url, "/")+"/api/v1/subscribe?"+q.Encode(), nil)
			if err != nil {
				cancel()
				return nil, fmt.Errorf("sse request: %w", err)
			}
			req.Header.Set("Accept", "text/event-stream")
			if c.username != "" {
				req.SetBasicAuth(c.username, c.password)
			}
			resp, err := client.Do(req)
			if err != nil {
				cancel()
				return nil, fmt.Errorf("sse GET: %w", err)
			}
			if resp.StatusCode != http.StatusOK {
				_ = resp.Body.Close()
				cancel()
				return nil, fmt.Errorf("sse GET %s: %s", req.URL.Path, resp.Status)
			}
			br := bufio.NewReaderSize(resp.Body, 64<<10)
			// The hub writes ": subscribed" once the subscription is on
			// the bus; publishing before it would lose messages.
			ready := make(chan error, 1)
			s := &sseSub{cancel: cancel, done: make(chan struct{})}
			go func() {
				defer close(s.done)
				defer resp.Body.Close()
				subscribed := false
				for {
					line, err := br.ReadBytes('\n')
					if err != nil {
						if !subscribed {
							ready <- fmt.Errorf("sse: stream ended before it was subscribed: %w", err)
						} else if sctx.Err() == nil && !errors.Is(err, context.Canceled) {
							onError(fmt.Errorf("sse stream: %w", err))
						}
						return
					}
					line = bytes.TrimRight(line, "\r\n")
					switch {
					case !subscribed && bytes.HasPrefix(line, []byte(": subscribed")):
						subscribed = true
						ready <- nil
					case bytes.HasPrefix(line, []byte("data: ")):
						p, err := decodeSSEData(line[len("data: "):])
						if err != nil {
							onError(err)
							continue
						}
						deliver(p)
					}
				}
			}()
			select {
			case err := <-ready:
				if err != nil {
					s.close()
					return nil, err
				}
				return s, nil
			case <-ctx.Done():
				s.close()
				return nil, fmt.Errorf("sse: waiting for the subscription: %w", ctx.Err())
			}
		},
	}, nil
}
