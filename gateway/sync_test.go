package gateway

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hubsmith/hub/store"
)

// TestSyncInterval: sync_interval reaches the store the hub opens
// ("always", a duration, the default 1s, "" as the default), a bad value
// is refused naming the key, and a change is named as needing a restart.
func TestSyncInterval(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		value   string
		want    time.Duration
		wantErr string
	}{
		{"always", store.SyncAlways, ""},
		{"250ms", 250 * time.Millisecond, ""},
		{Defaults().SyncInterval, time.Second, ""},
		{"", store.DefaultSyncInterval, ""},
		{"0s", 0, `sync_interval "0s": want always or a positive duration`},
		{"-1s", 0, `sync_interval "-1s"`},
		{"sometimes", 0, `sync_interval "sometimes"`},
	} {
		name := c.value
		if name == "" {
			name = "empty"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cfg := Defaults()
			cfg.DataDir = t.TempDir()
			cfg.MQTT.Addr, cfg.CoAP.Addr, cfg.XMPP.Addr, cfg.HTTP.Addr, cfg.XMPP.ProxyAddr = Off, Off, Off, Off, Off
			cfg.SyncInterval = c.value
			err := cfg.Validate()
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("Validate: %v, want an error with %q", err, c.wantErr)
				}
				if _, err := New(cfg, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("New: %v, want an error with %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Validate: %v", err)
			}
			h, err := New(cfg, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			defer h.Stop(context.Background())
			if got := h.Store.SyncInterval(); got != c.want {
				t.Errorf("store sync interval %v, want %v", got, c.want)
			}
		})
	}
	old, cfg := Defaults(), Defaults()
	cfg.SyncInterval = "always"
	if keys := restartOnly(old, cfg); !slices.Contains(keys, "sync_interval") {
		t.Errorf("restart-only keys of a sync_interval change: %v", keys)
	}
}
