package gateway

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestAdapterErrSaysTheNameOnce(t *testing.T) {
	base := errors.New("listen tcp 127.0.0.1:1883: bind: address already in use")
	cases := []struct {
		err  error
		want string
	}{
		{fmt.Errorf("mqtt: listen mqtt on 127.0.0.1:1883: %w", base), "start mqtt: listen mqtt on 127.0.0.1:1883: listen tcp 127.0.0.1:1883: bind: address already in use"},
		{fmt.Errorf("listen: %w", base), "start mqtt: listen: listen tcp 127.0.0.1:1883: bind: address already in use"},
		{fmt.Errorf("mqttx: %w", base), "start mqtt: mqttx: listen tcp 127.0.0.1:1883: bind: address already in use"},
	}
	for _, c := range cases {
		got := adapterErr("start", "mqtt", c.err)
		if got.Error() != c.want {
			t.Errorf("adapterErr(%q) = %q, want %q", c.err, got, c.want)
		}
		if !errors.Is(got, base) {
			t.Errorf("adapterErr(%q) does not unwrap to the adapter's error", c.err)
		}
	}
}

func TestValidateHTTPBounds(t *testing.T) {
	good := Defaults()
	if err := good.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, c := range []struct {
		change func(*HTTPConfig)
		want   string
	}{
		{func(h *HTTPConfig) { h.ReadTimeout = -time.Second }, "http.read_timeout"},
		{func(h *HTTPConfig) { h.ReadHeaderTimeout = -1 }, "http.read_header_timeout"},
		{func(h *HTTPConfig) { h.IdleTimeout = -1 }, "http.idle_timeout"},
		{func(h *HTTPConfig) { h.ReadHeaderTimeout, h.ReadTimeout = time.Minute, time.Second }, "must not exceed http.read_timeout"},
		{func(h *HTTPConfig) { h.MaxHeaderBytes = -1 }, "http.max_header_bytes"},
		{func(h *HTTPConfig) { h.MaxHeaderBytes = 1 << 30 }, "http.max_header_bytes"},
	} {
		cfg := Defaults()
		c.change(&cfg.HTTP)
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error naming %q", cfg.HTTP, err, c.want)
		}
	}
	cfg := Defaults()
	cfg.HTTP.ReadHeaderTimeout, cfg.HTTP.ReadTimeout, cfg.HTTP.IdleTimeout, cfg.HTTP.MaxHeaderBytes = 0, 0, 0, 0
	if err := cfg.Validate(); err != nil {
		t.Errorf("zeros (the defaults): %v", err)
	}
}
