//go:build !unix

package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/hubsmith/hub/gateway"
)

// catchHangup: there is no SIGHUP here; POST /api/v1/admin/reload still
// reloads.
func catchHangup() chan os.Signal { return nil }

func serveHangups(context.Context, chan os.Signal, *gateway.Hub, *slog.Logger) {}
