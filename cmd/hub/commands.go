package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/devices"
	"github.com/hubsmith/hub/gateway"
	"github.com/hubsmith/hub/store"
)

func serve(ctx context.Context, args []string, stderr io.Writer) error {
	cfg, err := loadConfig(args, os.Getenv, stderr)
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log, stderr)
	h, err := gateway.New(cfg, log)
	if err != nil {
		return err
	}
	if err := h.Start(ctx); err != nil {
		return err
	}
	log.Info("hub: serving", "version", version, "listeners", h.Addrs(), "data_dir", cfg.DataDir)
	<-ctx.Done()
	log.Info("hub: shutting down")
	stopCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	return h.Stop(stopCtx)
}

func newLogger(c gateway.LogConfig, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// splitArgs separates the positional arguments of a subcommand from its
// flags, so "user add NAME --password P" and "user add --password P NAME"
// both work.
func splitArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return nil, usageError{err}
		}
		args = fs.Args()
		if len(args) > 0 {
			pos = append(pos, args[0])
			args = args[1:]
		}
	}
	return pos, nil
}

func dataDirDefault() string {
	if d := os.Getenv("HUB_DATA_DIR"); d != "" {
		return d
	}
	return gateway.Defaults().DataDir
}

func userAdd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("hub user add", flag.ContinueOnError)
	fs.SetOutput(stderr)
	password := fs.String("password", "", "the user's password (required)")
	role := fs.String("role", adapters.RoleUser, "admin, user or device")
	dir := fs.String("data-dir", dataDirDefault(), "store directory")
	pos, err := splitArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError{errors.New("want exactly one user NAME")}
	}
	if *password == "" {
		return usageError{errors.New("--password is required")}
	}
	st, err := store.Open(ctx, *dir)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.AddUser(ctx, pos[0], *password, *role); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "user %s added with role %s\n", pos[0], *role)
	return nil
}

func deviceAdd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("hub device add", flag.ContinueOnError)
	fs.SetOutput(stderr)
	protocol := fs.String("protocol", "mqtt", "mqtt, coap or xmpp")
	name := fs.String("name", "", "display name (default: the id)")
	password := fs.String("password", "", "password the device logs in with (MQTT, XMPP)")
	pskHex := fs.String("psk", "", "DTLS pre-shared key in hex (CoAP)")
	dir := fs.String("data-dir", dataDirDefault(), "store directory")
	pos, err := splitArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError{errors.New("want exactly one device ID")}
	}
	switch *protocol {
	case "mqtt", "coap", "xmpp":
	default:
		return usageError{fmt.Errorf("--protocol %q: want mqtt, coap or xmpp", *protocol)}
	}
	var psk []byte
	if *pskHex != "" {
		psk, err = hex.DecodeString(strings.TrimPrefix(*pskHex, "0x"))
		if err != nil || len(psk) == 0 {
			return usageError{fmt.Errorf("--psk: want hex bytes: %v", err)}
		}
	}
	st, err := store.Open(ctx, *dir)
	if err != nil {
		return err
	}
	defer st.Close()
	d := store.Device{ID: pos[0], Name: *name, Protocol: *protocol, PSK: psk}
	if d.Name == "" {
		d.Name = d.ID
	}
	reg, err := devices.New(devices.Config{Store: st})
	if err != nil {
		return err
	}
	if err := reg.Add(ctx, d, *password); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "device %s added (%s)\n", d.ID, d.Protocol)
	return nil
}
