package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/devices"
	"github.com/hubsmith/hub/gateway"
	"github.com/hubsmith/hub/store"
)

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := loadConfig(args, os.Getenv, stdout)
	if err != nil {
		return err
	}
	lock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return err
	}
	defer lock.release()
	log := newLogger(cfg.Log, stderr)
	applyMemoryLimit(log, os.Getenv, os.ReadFile)
	if lock.warning != nil {
		log.Warn("hub: " + lock.warning.Error())
	}
	h, err := gateway.New(cfg, log)
	if err != nil {
		return err
	}
	h.SetConfigSource(func() (gateway.Config, error) { return loadConfig(args, os.Getenv, io.Discard) })
	hup := catchHangup()
	if err := h.Start(ctx); err != nil {
		if ctx.Err() != nil {
			// SIGINT or SIGTERM during start-up: a stop asked for, not a
			// failure (Start has stopped what it started).
			log.Info("hub: stopped while starting")
			return nil
		}
		return err
	}
	log.Info("hub: serving", "version", shortVersion(), "listeners", h.Addrs(), "data_dir", cfg.DataDir)
	serveHangups(ctx, hup, h, log)
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

func dataDirDefault() string {
	if d := os.Getenv("HUB_DATA_DIR"); d != "" {
		return d
	}
	return gateway.Defaults().DataDir
}

// openStore opens the store in dir for a user or device command.
// openListed parses the flags of a command that takes no argument and
// opens the store of the data dir they name (dir is the flag's value,
// read once parsed).
func openListed(ctx context.Context, fs *cmdFlags, dir *string, args []string, stdout io.Writer) (*store.Store, error) {
	pos, err := fs.parse(args, stdout)
	if err != nil {
		return nil, err
	}
	if len(pos) > 0 {
		return nil, fs.usagef("unexpected argument %q", pos[0])
	}
	return openStore(ctx, *dir)
}

func openStore(ctx context.Context, dir string) (*store.Store, error) {
	st, err := store.Open(ctx, dir)
	if err != nil {
		return nil, fmt.Errorf("open the store in %s: %w", dir, err)
	}
	return st, nil
}

const nameRules = `A name is also an XMPP address (NAME@domain) and an MQTT client id: at most
64 bytes, no spaces, control characters or any of " & ' / : < > @ + #.`

const userUsage = `Usage:
  hub user add NAME --password P [--role admin|user|device] [--data-dir DIR]
  hub user list [--data-dir DIR]
  hub user delete NAME [--data-dir DIR]
  hub user passwd NAME --password P [--data-dir DIR]

Users log in over MQTT (username/password), XMPP (SASL SCRAM or PLAIN) and
REST (basic auth or a token). The commands work on the store in --data-dir
(default ./hub-data, or $HUB_DATA_DIR), also while the hub runs.
Run "hub user add --help" (and so on) for the flags of each.
`

// userCommand runs "hub user ...".
func userCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sub, args, err := subcommand("hub user", args, "add, list, delete or passwd", stdout, userUsage)
	if err != nil {
		return err
	}
	switch sub {
	case "add":
		return userAdd(ctx, args, stdout)
	case "list":
		return userList(ctx, args, stdout, stderr)
	case "delete":
		return userDelete(ctx, args, stdout)
	case "passwd":
		return userPasswd(ctx, args, stdout)
	}
	return usagef("hub user", "user: unknown subcommand %q (want add, list, delete or passwd)", sub)
}

// oneName parses a command that takes exactly one NAME or ID.
func oneName(fs *cmdFlags, args []string, stdout io.Writer, what string) (string, error) {
	pos, err := fs.parse(args, stdout)
	if err != nil {
		return "", err
	}
	switch {
	case len(pos) == 0:
		return "", fs.usagef("missing %s", what)
	case len(pos) > 1:
		return "", fs.usagef("want one %s, got %d: %s", what, len(pos), strings.Join(pos, " "))
	}
	return pos[0], nil
}

func userAdd(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("hub user add", "hub user add NAME --password P [--role admin|user|device] [--data-dir DIR]",
		"Adds a user to the store.\n"+nameRules)
	password := fs.String("password", "", "the user's `PASSWORD` (required)")
	role := fs.String("role", adapters.RoleUser, "`ROLE`: admin, user or device")
	dir := fs.String("data-dir", dataDirDefault(), "data `DIR` holding the store (env HUB_DATA_DIR)")
	name, err := oneName(fs, args, stdout, "NAME")
	if err != nil {
		return err
	}
	if err := store.ValidateName(name); err != nil {
		return fs.usagef("%v", err)
	}
	if *password == "" {
		return fs.usagef("--password is required")
	}
	switch *role {
	case adapters.RoleAdmin, adapters.RoleUser, adapters.RoleDevice:
	default:
		return fs.usagef("--role %q: want admin, user or device", *role)
	}
	st, err := openStore(ctx, *dir)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.AddUser(ctx, name, *password, *role); err != nil {
		return plain(err, "user", name, *dir)
	}
	fmt.Fprintf(stdout, "user %s added with role %s\n", name, *role)
	return nil
}

func userList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("hub user list", "hub user list [--data-dir DIR]", "Lists the users in the store: name, role and when each was added.")
	dir := fs.String("data-dir", dataDirDefault(), "data `DIR` holding the store (env HUB_DATA_DIR)")
	st, err := openListed(ctx, fs, dir, args, stdout)
	if err != nil {
		return err
	}
	defer st.Close()
	users, err := st.ListUsers(ctx)
	if err != nil {
		return err
	}
	if len(users) == 0 {
		fmt.Fprintf(stderr, "no users in %s (add one with \"hub user add NAME --password P\")\n", *dir)
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tROLE\tADDED")
	for _, u := range users {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", u.Name, u.Role, when(u.Created))
	}
	return tw.Flush()
}

func userDelete(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("hub user delete", "hub user delete NAME [--data-dir DIR]",
		"Deletes a user with its tokens and ACL rules. The login of a device goes\nwith the device: use \"hub device delete ID\" for it.")
	dir := fs.String("data-dir", dataDirDefault(), "data `DIR` holding the store (env HUB_DATA_DIR)")
	name, err := oneName(fs, args, stdout, "NAME")
	if err != nil {
		return err
	}
	st, err := openStore(ctx, *dir)
	if err != nil {
		return err
	}
	defer st.Close()
	if u, err := st.GetUser(ctx, name); err == nil && u.Role == adapters.RoleDevice {
		if _, err := st.GetDevice(ctx, name); err == nil {
			return fmt.Errorf("user %q is how device %q logs in; delete the device with \"hub device delete %s\"", name, name, name)
		}
	}
	if err := st.DeleteUser(ctx, name); err != nil {
		return plain(err, "user", name, *dir)
	}
	fmt.Fprintf(stdout, "user %s deleted\n", name)
	return nil
}

func userPasswd(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("hub user passwd", "hub user passwd NAME --password P [--data-dir DIR]",
		"Sets a user's password (a device's too: its login is a user of the same name).\nA hub that is running takes the new password at the next login.")
	password := fs.String("password", "", "the new `PASSWORD` (required)")
	dir := fs.String("data-dir", dataDirDefault(), "data `DIR` holding the store (env HUB_DATA_DIR)")
	name, err := oneName(fs, args, stdout, "NAME")
	if err != nil {
		return err
	}
	if *password == "" {
		return fs.usagef("--password is required")
	}
	st, err := openStore(ctx, *dir)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.SetPassword(ctx, name, *password); err != nil {
		return plain(err, "user", name, *dir)
	}
	fmt.Fprintf(stdout, "password of user %s changed\n", name)
	return nil
}

const deviceUsage = `Usage:
  hub device add ID [--protocol mqtt|coap|xmpp] [--password P] [--psk HEX] [--commands FILE.json] [--data-dir DIR]
  hub device list [--data-dir DIR]
  hub device delete ID [--data-dir DIR]

A device logs in as the user ID (role device) with its password over MQTT
and XMPP, and with its pre-shared key (identity ID) over CoAP with DTLS. It
may publish under devices/ID/#. Run "hub device add --help" for the flags.
`

// deviceCommand runs "hub device ...".
func deviceCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sub, args, err := subcommand("hub device", args, "add, list or delete", stdout, deviceUsage)
	if err != nil {
		return err
	}
	switch sub {
	case "add":
		return deviceAdd(ctx, args, stdout)
	case "list":
		return deviceList(ctx, args, stdout, stderr)
	case "delete":
		return deviceDelete(ctx, args, stdout)
	}
	return usagef("hub device", "device: unknown subcommand %q (want add, list or delete)", sub)
}

const deviceAddAbout = `Registers a device. It needs a credential: --password for a device that
logs in over MQTT or XMPP (as user ID, role device), --psk for CoAP over
DTLS (PSK identity ID), or both. The key is given in hex; libcoap's
coap-client -k takes it as text, so for "coap-client -u lamp1 -k secret"
give --psk $(printf %s secret | od -An -tx1 | tr -d ' \n').
An ID is letters, digits, '.', '_' and '-', starting with a letter or digit,
at most 64 bytes: it is also an MQTT client id, a topic level and an XMPP
address.`

func deviceAdd(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("hub device add", "hub device add ID [--protocol mqtt|coap|xmpp] [--password P] [--psk HEX] [--commands FILE.json] [--data-dir DIR]", deviceAddAbout)
	protocol := fs.String("protocol", devices.ProtocolMQTT, "`PROTOCOL` the device speaks: mqtt, coap or xmpp")
	name := fs.String("name", "", "display `NAME` (default: the id)")
	password := fs.String("password", "", "`PASSWORD` the device logs in with (MQTT, XMPP)")
	pskHex := fs.String("psk", "", "DTLS pre-shared key in `HEX` (CoAP over DTLS)")
	commandsFile := fs.String("commands", "", "JSON `FILE` declaring the device's commands and their parameters (see README)")
	dir := fs.String("data-dir", dataDirDefault(), "data `DIR` holding the store (env HUB_DATA_DIR)")
	id, err := oneName(fs, args, stdout, "ID")
	if err != nil {
		return err
	}
	if err := store.ValidateName(id); err != nil {
		return fs.usagef("%v", err)
	}
	if err := devices.ValidateID(id); err != nil {
		return fs.usagef("invalid id %q: use letters, digits, '.', '_' and '-', starting with a letter or digit", id)
	}
	if err := devices.ValidateProtocol(*protocol); err != nil {
		return fs.usagef("--protocol %q: want mqtt, coap or xmpp", *protocol)
	}
	var psk []byte
	if *pskHex != "" {
		psk, err = hex.DecodeString(strings.TrimPrefix(*pskHex, "0x"))
		if err != nil || len(psk) == 0 {
			return fs.usagef("--psk %q: want the key as hex digits, e.g. 736563726574 for \"secret\"", *pskHex)
		}
	}
	if *password == "" && psk == nil {
		// Refused rather than generated: like mosquitto_passwd and
		// EMQX's authentication, the operator chooses the secret that
		// goes into the device's configuration.
		return fs.usagef("device %q needs a credential: --password P (MQTT, XMPP) or --psk HEX (CoAP over DTLS)", id)
	}
	cmds, err := readCommands(*commandsFile)
	if err != nil {
		return fs.usagef("%v", err)
	}
	st, err := openStore(ctx, *dir)
	if err != nil {
		return err
	}
	defer st.Close()
	d := store.Device{ID: id, Name: *name, Protocol: *protocol, PSK: psk}
	reg, err := devices.New(devices.Config{Store: st})
	if err != nil {
		return err
	}
	if err := reg.Add(ctx, d, *password); err != nil {
		if errors.Is(err, store.ErrExists) {
			if _, gerr := st.GetDevice(ctx, id); gerr != nil {
				return fmt.Errorf("a user %q already exists; a device that logs in with a password needs the user name to itself", id)
			}
		}
		return plain(err, "device", id, *dir)
	}
	if len(cmds) > 0 {
		if err := reg.SetCommands(ctx, id, cmds); err != nil {
			return plain(err, "device", id, *dir)
		}
	}
	var creds []string
	if *password != "" {
		creds = append(creds, "password")
	}
	if psk != nil {
		creds = append(creds, "psk")
	}
	fmt.Fprintf(stdout, "device %s added (%s, %s%s)\n", id, *protocol, strings.Join(creds, " and "), commandCount(cmds))
	return nil
}

func deviceList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("hub device list", "hub device list [--data-dir DIR]",
		"Lists the registered devices: id, protocol, credentials, presence as last\nrecorded by the hub, and name.")
	dir := fs.String("data-dir", dataDirDefault(), "data `DIR` holding the store (env HUB_DATA_DIR)")
	st, err := openListed(ctx, fs, dir, args, stdout)
	if err != nil {
		return err
	}
	defer st.Close()
	ds, err := st.ListDevices(ctx)
	if err != nil {
		return err
	}
	if len(ds) == 0 {
		fmt.Fprintf(stderr, "no devices in %s (add one with \"hub device add ID --password P\")\n", *dir)
		return nil
	}
	users, err := st.ListUsers(ctx)
	if err != nil {
		return err
	}
	login := map[string]bool{}
	for _, u := range users {
		login[u.Name] = u.Role == adapters.RoleDevice
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tPROTOCOL\tCREDENTIALS\tSTATE\tLAST SEEN\tNAME")
	for _, d := range ds {
		var creds []string
		if login[d.ID] {
			creds = append(creds, "password")
		}
		if len(d.PSK) > 0 {
			creds = append(creds, "psk")
		}
		if creds == nil {
			creds = []string{"none"}
		}
		state := "offline"
		if d.Online {
			state = "online"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", d.ID, d.Protocol, strings.Join(creds, ","), state, when(d.LastSeen), d.Name)
	}
	return tw.Flush()
}

func deviceDelete(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("hub device delete", "hub device delete ID [--data-dir DIR]",
		"Deletes a device and its login user.")
	dir := fs.String("data-dir", dataDirDefault(), "data `DIR` holding the store (env HUB_DATA_DIR)")
	id, err := oneName(fs, args, stdout, "ID")
	if err != nil {
		return err
	}
	st, err := openStore(ctx, *dir)
	if err != nil {
		return err
	}
	defer st.Close()
	reg, err := devices.New(devices.Config{Store: st})
	if err != nil {
		return err
	}
	if err := reg.Delete(ctx, id); err != nil {
		if errors.Is(err, devices.ErrUnknownDevice) {
			return fmt.Errorf("no device %q in %s", id, *dir)
		}
		return plain(err, "device", id, *dir)
	}
	fmt.Fprintf(stdout, "device %s deleted\n", id)
	return nil
}

// plain says what a store error means for a user or device in words,
// without the layers it went through; other errors are returned as they
// are.
func plain(err error, kind, name, dir string) error {
	switch {
	case errors.Is(err, store.ErrExists):
		return fmt.Errorf("%s %q already exists", kind, name)
	case errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("no %s %q in %s", kind, name, dir)
	}
	return err
}

// when formats a time for a listing; "-" for never.
func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}
