package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

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
		{name: "data-dir", usage: "data `DIR` holding the store and generated certificates", str: &c.DataDir},
		{name: "mqtt-addr", usage: "MQTT listener at `ADDR` (host:port, or off)", str: &c.MQTT.Addr},
		{name: "mqtts-addr", usage: "MQTT over TLS listener at `ADDR` (needs tls.cert_file and tls.key_file)", str: &c.MQTT.TLSAddr},
		{name: "mqtt-ws-addr", usage: "MQTT over WebSocket listener at `ADDR` (any path, subprotocol mqtt)", str: &c.MQTT.WSAddr},
		{name: "xmpp-addr", usage: "XMPP client-to-server listener at `ADDR`", str: &c.XMPP.Addr},
		{name: "xmpp-domain", usage: "XMPP `DOMAIN` the hub serves", str: &c.XMPP.Domain},
		{name: "xmpp-component-addr", usage: "connect as an XEP-0114 component to the XMPP server at `ADDR`", str: &c.XMPP.ComponentAddr},
		{name: "xmpp-component-domain", usage: "component `DOMAIN`, where topic JIDs then live", str: &c.XMPP.ComponentDomain},
		{name: "xmpp-component-secret", usage: "component shared `SECRET`", str: &c.XMPP.ComponentSecret},
		{name: "xmpp-proxy-addr", usage: "XEP-0065 SOCKS5 bytestreams proxy (proxy.DOMAIN) at `ADDR`", str: &c.XMPP.ProxyAddr},
		{name: "coap-addr", usage: "CoAP UDP listener at `ADDR`", str: &c.CoAP.Addr},
		{name: "coaps-addr", usage: "CoAP over DTLS listener at `ADDR`", str: &c.CoAP.DTLSAddr},
		{name: "http-addr", usage: "REST API, /healthz and /metrics at `ADDR`", str: &c.HTTP.Addr},
		{name: "https-addr", usage: "the same over HTTPS at `ADDR` (needs tls.cert_file and tls.key_file)", str: &c.HTTP.TLSAddr},
		{name: "pprof-addr", usage: "serve Go's profiles (net/http/pprof) at `ADDR`", str: &c.PprofAddr},
		{name: "nats", usage: "run the bus over NATS at `URL` (empty: in-process bus)", str: &c.NATS.URL},
		{name: "log-level", usage: "log `LEVEL`: debug, info, warn or error", str: &c.Log.Level},
		{name: "log-format", usage: "log `FORMAT`: text or json", str: &c.Log.Format},
		{name: "allow-anonymous", usage: "let clients without credentials in on non-loopback listeners", boolv: &c.AllowAnonymous},
	}
}

const serveAbout = `Runs the hub. With no flags every listener binds to loopback and the store
is in ./hub-data. Each flag can also be set in the YAML file (--config) and
with the HUB_* environment variable named beside it: flag > env > file >
default. An address of "off" disables that listener. SIGINT or SIGTERM
stops the hub gracefully.`

// loadConfig builds the serve configuration: defaults, then the YAML file,
// then HUB_* environment variables, then flags given on the command line.
// --help prints the usage to stdout and returns errHelp.
func loadConfig(args []string, getenv func(string) string, stdout io.Writer) (gateway.Config, error) {
	cfg := gateway.Defaults()
	fs := newFlags("hub serve", "hub serve [flags]", serveAbout)
	configFile := fs.String("config", "", "read the YAML configuration `FILE` (env HUB_CONFIG)")
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
	pos, err := fs.parse(args, stdout)
	if err != nil {
		return cfg, err
	}
	if len(pos) > 0 {
		return cfg, fs.usagef("unexpected argument %q", pos[0])
	}
	path := *configFile
	if path == "" {
		path = getenv("HUB_CONFIG")
	}
	if err := applyFileAndEnv(&cfg, path, getenv); err != nil {
		return cfg, err
	}
	real := serveOptions(&cfg)
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
		return cfg, located(path, err)
	}
	return cfg, nil
}

// aclRuleRef finds the ACL rule a validation error names: "acl.alice rule
// 2". This and the other expressions that reword configuration errors are
// compiled on the first error, not in every hub's initialisation.
var aclRuleRef = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^acl\.(\S+) rule (\d+) `) })

// located prefixes a validation error with the configuration file and,
// for an ACL rule, the line it is on: "config hub.yaml:12: acl.alice rule
// 2 ...". Errors about flags or the environment keep "config:".
func located(path string, err error) error {
	if path == "" {
		return fmt.Errorf("config: %w", err)
	}
	if m := aclRuleRef().FindStringSubmatch(err.Error()); m != nil {
		n, _ := strconv.Atoi(m[2])
		if line := aclRuleLine(path, m[1], n); line > 0 {
			return fmt.Errorf("config %s:%d: %w", path, line, err)
		}
	}
	return fmt.Errorf("config %s: %w", path, err)
}

// aclRuleLine returns the line of rule n (from 1) of principal in the
// file's acl: mapping, 0 when it cannot tell.
func aclRuleLine(path, principal string, n int) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	var doc yaml.Node
	if yaml.Unmarshal(b, &doc) != nil || len(doc.Content) == 0 {
		return 0
	}
	child := func(m *yaml.Node, key string) *yaml.Node {
		if m == nil || m.Kind != yaml.MappingNode {
			return nil
		}
		for i := 0; i+1 < len(m.Content); i += 2 {
			if m.Content[i].Value == key {
				return m.Content[i+1]
			}
		}
		return nil
	}
	rules := child(child(doc.Content[0], "acl"), principal)
	if rules == nil || rules.Kind != yaml.SequenceNode || n < 1 || n > len(rules.Content) {
		return 0
	}
	return rules.Content[n-1].Line
}

// applyFileAndEnv reads the YAML file at path (none when empty) into cfg,
// then the HUB_* environment variables.
func applyFileAndEnv(cfg *gateway.Config, path string, getenv func(string) string) error {
	if path != "" {
		if err := readConfigFile(path, cfg); err != nil {
			return err
		}
	}
	for _, o := range serveOptions(cfg) {
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
			return fmt.Errorf("%s=%q: want true or false", o.env(), v)
		}
		*o.boolv = b
	}
	return nil
}

// yamlUnknownField is how yaml.v3 names a key that has no field: "field
// adr not found in type gateway.MQTTConfig".
var yamlUnknownField = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`field ([^\s;]+) not found in type [\w.*\[\]]+`)
})

// yamlMismatch is how yaml.v3 reports a value of the wrong kind: "cannot
// unmarshal !!str `abc` into int".
var yamlMismatch = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile("cannot unmarshal !!(\\w+) `([^`]*)` into ([\\w.*\\[\\]]+)")
})

// yamlKinds names YAML's tags for people.
var yamlKinds = map[string]string{"str": "a string", "int": "a number", "float": "a number", "bool": "true or false",
	"map": "a mapping", "seq": "a list", "null": "empty", "timestamp": "a time"}

// yamlMessage rewords a yaml.v3 error in the file's terms.
func yamlMessage(err error) string {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msg = strings.Join(te.Errors, "; ")
	}
	msg = yamlUnknownField().ReplaceAllString(msg, "unknown key $1")
	return yamlMismatch().ReplaceAllStringFunc(msg, func(m string) string {
		sub := yamlMismatch().FindStringSubmatch(m)
		kind := yamlKinds[sub[1]]
		if kind == "" {
			kind = sub[1]
		}
		if len(sub[2]) > 40 {
			sub[2] = sub[2][:40] + "..."
		}
		return fmt.Sprintf("%q is %s, which does not fit here (expected %s)", sub[2], kind, sub[3])
	})
}

func readConfigFile(path string, cfg *gateway.Config) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config %s: %s", path, yamlMessage(err))
	}
	return nil
}

const configCheckAbout = `Loads FILE as "hub serve --config FILE" would (defaults, the file, then
HUB_* environment variables), validates it and builds every configured
listener, bridge and rule without starting any, touching the data dir or
binding a port. Prints "ok", or the error with the file and the reason and
exits with status 1.`

// configCommand runs "hub config check FILE".
func configCommand(args []string, stdout io.Writer) error {
	group := newFlags("hub config", "hub config check FILE", "")
	if len(args) == 0 {
		return group.usagef("missing subcommand: check")
	}
	switch args[0] {
	case "help", "--help", "-help", "-h":
		fmt.Fprintln(stdout, "Usage: hub config check FILE")
		fmt.Fprintf(stdout, "\n%s\n", configCheckAbout)
		return errHelp
	case "check":
	default:
		return group.usagef("unknown subcommand %q (want check)", args[0])
	}
	fs := newFlags("hub config check", "hub config check FILE", configCheckAbout)
	pos, err := fs.parse(args[1:], stdout)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fs.usagef("want one FILE, got %d arguments", len(pos))
	}
	if err := checkConfig(pos[0], os.Getenv); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "ok")
	return nil
}

// checkConfig loads and validates the file as serve would and builds the
// hub it describes over a scratch data dir, so what only the adapters
// check (TLS files, JID rules, bridge TLS) is checked too.
func checkConfig(path string, getenv func(string) string) error {
	cfg := gateway.Defaults()
	if err := applyFileAndEnv(&cfg, path, getenv); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return located(path, err)
	}
	scratch, err := os.MkdirTemp("", "hub-config-check-")
	if err != nil {
		return fmt.Errorf("config check: %w", err)
	}
	defer os.RemoveAll(scratch)
	cfg.DataDir = scratch
	cfg.Log.Level = "error"
	h, err := gateway.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.Stop(ctx); err != nil {
		return fmt.Errorf("config check: %w", err)
	}
	return nil
}
