//go:build unix

package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/hubsmith/hub/gateway"
)

// catchHangup starts catching SIGHUP at once (its default is to end the
// process), before the hub starts; serveHangups then reloads on each.
func catchHangup() chan os.Signal {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	return ch
}

// serveHangups reloads h's configuration on each SIGHUP until ctx ends;
// an invalid file is refused (logged) and the running configuration kept.
func serveHangups(ctx context.Context, ch chan os.Signal, h *gateway.Hub, log *slog.Logger) {
	go func() {
		defer signal.Stop(ch)
		for {
			select {
			case <-ctx.Done():
				return
			case <-ch:
				log.Info("hub: SIGHUP: reloading the configuration")
				if _, err := h.ReloadFromSource(ctx); err != nil {
					log.Error("hub: " + err.Error())
				}
			}
		}
	}()
}
