package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/hubsmith/hub/gateway"
)

// option binds one command-line flag to a configuration field; its
// environment variable is HUB_ plus the flag name in upper case with '_'
// for '-'.
type option struct {
	name  string
	usage string
	str   *string
	boolv *bool
}

func (o option) env() string {
	return "HUB_" + strings.ToUpper(strings.ReplaceAll(o.name, "-", "_"))
}

func serveOptions(c *gateway.Config) []option {
	return []option{
		{name: "data-dir", usage: "directory of the store and generated certificates", str: &c.DataDir},
		{name: "mqtt-addr", usage: "MQTT listener (off to disable)", str: &c.MQTT.Addr},
		{name: "mqtts-addr", usage: "MQTT over TLS listener", str: &c.MQTT.TLSAddr},
		{name: "xmpp-addr", usage: "XMPP client-to-server listener", str: &c.XMPP.Addr},
		{name: "xmpp-domain", usage: "XMPP domain served", str: &c.XMPP.Domain},
		{name: "xmpp-component-addr", usage: "connect as an XEP-0114 component to this XMPP server", str: &c.XMPP.ComponentAddr},
		{name: "xmpp-component-domain", usage: "component domain where topic JIDs live", str: &c.XMPP.ComponentDomain},
		{name: "xmpp-component-secret", usage: "component shared secret", str: &c.XMPP.ComponentSecret},
		{name: "coap-addr", usage: "CoAP UDP listener", str: &c.CoAP.Addr},
		{name: "coaps-addr", usage: "CoAP over DTLS listener", str: &c.CoAP.DTLSAddr},
		{name: "http-addr", usage: "REST API, /healthz and /metrics listener", str: &c.HTTP.Addr},
		{name: "nats", usage: "NATS URL of the cluster bus (empty: in-process bus)", str: &c.NATS},
		{name: "log-level", usage: "debug, info, warn or error", str: &c.Log.Level},
		{name: "log-format", usage: "text or json", str: &c.Log.Format},
		{name: "allow-anonymous", usage: "let clients without credentials in on non-loopback listeners", boolv: &c.AllowAnonymous},
	}
}

// loadConfig builds the serve configuration: defaults, then the YAML file,
// then HUB_* environment variables, then flags given on the command line.
func loadConfig(args []string, getenv func(string) string, stderr io.Writer) (gateway.Config, error) {
	cfg := gateway.Defaults()
	fs := flag.NewFlagSet("hub serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configFile := fs.String("config", "", "YAML configuration file (env HUB_CONFIG)")
	// Flags are parsed into a scratch copy first so that file and
	// environment values can be applied beneath them.
	scratch := gateway.Defaults()
	opts := serveOptions(&scratch)
	for _, o := range opts {
		if o.str != nil {
			fs.StringVar(o.str, o.name, *o.str, o.usage+" (env "+o.env()+")")
		} else {
			fs.BoolVar(o.boolv, o.name, *o.boolv, o.usage+" (env "+o.env()+")")
		}
	}
	if err := fs.Parse(args); err != nil {
		return cfg, usageError{err}
	}
	if fs.NArg() > 0 {
		return cfg, usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	path := *configFile
	if path == "" {
		path = getenv("HUB_CONFIG")
	}
	if path != "" {
		if err := readConfigFile(path, &cfg); err != nil {
			return cfg, err
		}
	}
	real := serveOptions(&cfg)
	for _, o := range real {
		v := getenv(o.env())
		if v == "" {
			continue
		}
		if o.str != nil {
			*o.str = v
			continue
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			return cfg, fmt.Errorf("%s=%q: want true or false", o.env(), v)
		}
		*o.boolv = b
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for i, o := range real {
		if !set[o.name] {
			continue
		}
		if o.str != nil {
			*o.str = *opts[i].str
		} else {
			*o.boolv = *opts[i].boolv
		}
	}
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

func readConfigFile(path string, cfg *gateway.Config) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config: %s: %w", path, err)
	}
	return nil
}
