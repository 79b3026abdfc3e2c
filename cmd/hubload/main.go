// Command hubload is a load generator for the hub and for any MQTT broker
// (Mosquitto, for comparison). It connects subscribers first, then
// publishers, sends a bounded number of messages within a bounded time,
// each carrying its send time and sequence number, and reports messages
// sent and received, loss, duplicates, throughput and latency percentiles,
// and optionally the memory of the process under test.
//
//	hubload mqtt --url tcp://127.0.0.1:1883 --publishers 10 --subscribers 10 --messages 10000 --qos 1
//	hubload coap --url coap://127.0.0.1:5683 --mqtt-url tcp://127.0.0.1:1883 ...
//	hubload http --url http://127.0.0.1:8080 --mqtt-url tcp://127.0.0.1:1883 ...
//
// In the coap and http modes the publishers use that protocol
// (POST /ps/{topic}, POST /api/v1/topics/{topic}) and the subscribers are
// MQTT clients of the same hub, so the figures cover the crossing.
//
// It refuses a target that is not a loopback address unless given
// --allow-remote. Exit status: 0 after a run, 1 when the run could not take
// place, 2 for bad usage, 3 when --fail-on-loss is set and a message was lost
// or could not be sent.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"
)

// config is the parsed command line.
type config struct {
	mode           string
	url            string
	mqttURL        string
	subURL         string
	publishers     int
	subscribers    int
	messages       int
	qos            byte
	size           int
	topic          string
	fanout         bool
	duration       time.Duration
	drain          time.Duration
	connectTimeout time.Duration
	rate           float64
	inflight       int
	username       string
	password       string
	pid            int
	allowRemote    bool
	json           bool
	failOnLoss     bool
	persistent     bool
	clientPrefix   string
	// mqttClient is the MQTT client of every MQTT connection of a run:
	// mqttClientLean (the default) or mqttClientPaho.
	mqttClient string
	// cpuProfile is where to write hubload's own CPU profile of the run.
	cpuProfile string
	// XMPP modes: the server's domain and the accounts (the first %d of
	// xmppUser becomes the client number).
	domain       string
	xmppUser     string
	xmppPassword string
	// textPayload: payloads use the text header (XMPP bodies, SSE).
	textPayload bool
}

// Limits on a run, so that a typo cannot start an unbounded one.
const (
	maxClients    = 10000
	maxMessages   = 10_000_000
	maxDuration   = 10 * time.Minute
	maxDrain      = time.Minute
	maxDeliveries = 2_000_000_000
)

var defaultURL = map[string]string{
	"mqtt":       "tcp://127.0.0.1:1883",
	"coap":       "coap://127.0.0.1:5683",
	"http":       "http://127.0.0.1:8080",
	"xmpp":       "xmpp://127.0.0.1:5222",
	"xmpp-topic": "xmpp://127.0.0.1:5222",
	"sse":        "http://127.0.0.1:8080",
}

// errUsage marks a command-line error (exit status 2).
var errUsage = errors.New("usage")

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: hubload mqtt|coap|http|xmpp|xmpp-topic|sse [flags]
       hubload idle|login|mochi [flags]

  mqtt        MQTT publishers and subscribers on --url
  coap        CoAP publishers (POST --url/ps/{topic}, CON for qos>=1, NON for qos 0),
              MQTT subscribers on --mqtt-url
  http        HTTP publishers (POST --url/api/v1/topics/{topic}?qos=N),
              MQTT subscribers on --mqtt-url
  xmpp        XMPP users chatting on --url (xmpp://host:port; STARTTLS, SASL):
              publisher i sends to the subscriber of its topic (pairs or fan-in)
  xmpp-topic  MQTT publishers on --mqtt-url, XMPP subscribers on --url
              subscribed to the topic's JID (topic a/b is a.b@topics.DOMAIN)
  sse         MQTT publishers on --mqtt-url, SSE subscribers on --url
              (GET /api/v1/subscribe?filter={topic})
  idle        open idle MQTT and XMPP sessions, report the server's RSS per session
  login       repeated XMPP c2s logins (STARTTLS, SASL, bind): logins/s and latency
  mochi       run a bare mochi-mqtt broker (default options) until interrupted

Topics: with --fanout every client uses one topic; otherwise there are
min(publishers, subscribers) topics and client k uses topic k mod that
(10x10 = ten 1->1 pairs). --messages is the total, split over publishers.

Run "hubload MODE -h" for the flags.
`)
}

// parseArgs parses args (without the program name).
func parseArgs(args []string, stderr io.Writer) (*config, error) {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		usage(stderr)
		return nil, fmt.Errorf("%w: missing mode (mqtt, coap, http, xmpp, xmpp-topic, sse, idle, login or mochi)", errUsage)
	}
	c := &config{mode: args[0]}
	if _, ok := defaultURL[c.mode]; !ok {
		usage(stderr)
		return nil, fmt.Errorf("%w: unknown mode %q (want mqtt, coap, http, xmpp, xmpp-topic, sse, idle, login or mochi)", errUsage, c.mode)
	}
	fs := flag.NewFlagSet("hubload "+c.mode, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var qos int
	fs.StringVar(&c.url, "url", defaultURL[c.mode], "target URL (publishers; subscribers too in mqtt mode)")
	fs.StringVar(&c.mqttURL, "mqtt-url", "tcp://127.0.0.1:1883", "MQTT URL of the subscribers (coap and http modes)")
	fs.StringVar(&c.subURL, "sub-url", "", "MQTT URL of the subscribers in mqtt mode (default: --url), e.g. another hub of a cluster")
	fs.IntVar(&c.publishers, "publishers", 1, "publishing clients")
	fs.IntVar(&c.subscribers, "subscribers", 1, "subscribing clients (MQTT)")
	fs.IntVar(&c.messages, "messages", 1000, "messages to publish in all, split over the publishers")
	fs.IntVar(&qos, "qos", 0, "QoS of publications and subscriptions (0, 1, 2)")
	fs.IntVar(&c.size, "size", 64, fmt.Sprintf("payload bytes (at least %d, the header)", headerSize))
	fs.StringVar(&c.topic, "topic", "bench/%d", "topic pattern; %d becomes the topic number")
	fs.BoolVar(&c.fanout, "fanout", false, "put every client on one topic (1->N fan-out)")
	fs.DurationVar(&c.duration, "duration", 30*time.Second, "longest time to publish for (at most 10m)")
	fs.DurationVar(&c.drain, "drain", 2*time.Second, "after publishing, stop waiting when nothing arrived for this long")
	fs.DurationVar(&c.connectTimeout, "connect-timeout", 15*time.Second, "bound on connecting all clients")
	fs.Float64Var(&c.rate, "rate", 0, "total messages per second (0: as fast as possible)")
	fs.IntVar(&c.inflight, "inflight", 100, "unacknowledged MQTT publications per publisher")
	fs.StringVar(&c.username, "username", "", "username (MQTT, and HTTP basic auth)")
	fs.StringVar(&c.password, "password", "", "password")
	fs.IntVar(&c.pid, "pid", 0, "process id of the server under test, to report its memory")
	fs.BoolVar(&c.allowRemote, "allow-remote", false, "allow a target that is not a loopback address")
	fs.BoolVar(&c.json, "json", false, "print the result as JSON")
	fs.BoolVar(&c.persistent, "persistent", false, "MQTT subscribers keep a persistent session (clean session false), removed when the run ends")
	fs.BoolVar(&c.failOnLoss, "fail-on-loss", false, "exit with status 3 when a message was lost or not sent")
	fs.StringVar(&c.mqttClient, "mqtt-client", mqttClientLean, "MQTT client of every MQTT connection: lean (hubload's own, one reader and one batching writer per connection) or paho (the Eclipse Paho Go client), to compare")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write hubload's own CPU profile of the run to this file (go tool pprof)")
	fs.StringVar(&c.clientPrefix, "client-prefix", fmt.Sprintf("hubload-%08x", rand.Uint32()), "prefix of MQTT client ids")
	fs.StringVar(&c.domain, "domain", "localhost", "XMPP domain (xmpp, xmpp-topic)")
	fs.StringVar(&c.xmppUser, "xmpp-user", "load%d", "XMPP user names; %d becomes the client number (publishers 0..P-1, subscribers P..P+S-1)")
	fs.StringVar(&c.xmppPassword, "xmpp-password", "loadpw", "password of every XMPP user")
	if err := fs.Parse(args[1:]); err != nil {
		return nil, fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	if qos < 0 || qos > 2 {
		return nil, fmt.Errorf("%w: --qos %d: must be 0, 1 or 2", errUsage, qos)
	}
	c.qos = byte(qos)
	c.textPayload = c.mode == "xmpp" || c.mode == "xmpp-topic" || c.mode == "sse"
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", errUsage, err)
	}
	return c, nil
}

// validate checks the bounds of c.
func (c *config) validate() error {
	switch {
	case c.publishers < 1 || c.publishers > maxClients:
		return fmt.Errorf("--publishers %d: must be 1..%d", c.publishers, maxClients)
	case c.subscribers < 1 || c.subscribers > maxClients:
		return fmt.Errorf("--subscribers %d: must be 1..%d", c.subscribers, maxClients)
	case c.messages < 1 || c.messages > maxMessages:
		return fmt.Errorf("--messages %d: must be 1..%d", c.messages, maxMessages)
	case c.textPayload && (c.size < textHeaderSize || c.size > maxPayloadSize):
		return fmt.Errorf("--size %d: must be %d..%d in mode %s (the payload carries a %d-byte text header)", c.size, textHeaderSize, maxPayloadSize, c.mode, textHeaderSize)
	case c.size < headerSize || c.size > maxPayloadSize:
		return fmt.Errorf("--size %d: must be %d..%d (the payload carries a %d-byte header)", c.size, headerSize, maxPayloadSize, headerSize)
	case c.duration <= 0 || c.duration > maxDuration:
		return fmt.Errorf("--duration %s: must be more than 0 and at most %s", c.duration, maxDuration)
	case c.drain <= 0 || c.drain > maxDrain:
		return fmt.Errorf("--drain %s: must be more than 0 and at most %s", c.drain, maxDrain)
	case c.connectTimeout <= 0 || c.connectTimeout > maxDrain:
		return fmt.Errorf("--connect-timeout %s: must be more than 0 and at most %s", c.connectTimeout, maxDrain)
	case c.rate < 0:
		return fmt.Errorf("--rate %g: must not be negative", c.rate)
	case c.inflight < 1 || c.inflight > 65535:
		return fmt.Errorf("--inflight %d: must be 1..65535", c.inflight)
	case c.pid < 0:
		return fmt.Errorf("--pid %d: must be a process id", c.pid)
	case c.mqttClient != "" && c.mqttClient != mqttClientLean && c.mqttClient != mqttClientPaho:
		return fmt.Errorf("--mqtt-client %q: must be lean or paho", c.mqttClient)
	case c.topic == "":
		return errors.New("--topic: must not be empty")
	case strings.ContainsAny(c.topic, "+#\x00"):
		return fmt.Errorf("--topic %q: must not contain wildcards or NUL", c.topic)
	case strings.Count(c.topic, "%d") > 1:
		return fmt.Errorf("--topic %q: at most one %%d", c.topic)
	case strings.Count(c.topic, "%") != strings.Count(c.topic, "%d"):
		return fmt.Errorf("--topic %q: %%d is the only verb allowed", c.topic)
	}
	if c.mode == "xmpp" {
		switch {
		case c.fanout || c.subscribers > c.publishers:
			return errors.New("mode xmpp: chat is one to one: want --subscribers <= --publishers (pairs or fan-in) and no --fanout")
		case !strings.Contains(c.topic, "%d") && c.subscribers > 1:
			return fmt.Errorf("mode xmpp: --topic %q needs %%d for more than one subscriber", c.topic)
		}
	}
	if c.textPayload && c.qos > 0 && c.mode != "sse" && c.mode != "xmpp-topic" {
		return fmt.Errorf("--qos %d: mode %s sends plain stanzas (QoS 0)", c.qos, c.mode)
	}
	if c.mode == "xmpp" || c.mode == "xmpp-topic" {
		if !strings.Contains(c.xmppUser, "%d") {
			return fmt.Errorf("--xmpp-user %q: must contain %%d (each client logs in as its own user)", c.xmppUser)
		}
		if c.domain == "" {
			return errors.New("--domain: must not be empty")
		}
	}
	topics := min(c.publishers, c.subscribers)
	if c.fanout || !strings.Contains(c.topic, "%d") {
		topics = 1
	}
	if d := uint64(c.messages) * uint64(c.subscribers) / uint64(topics); d > maxDeliveries {
		return fmt.Errorf("--messages %d × --subscribers %d on %d topics: %d deliveries, more than %d", c.messages, c.subscribers, topics, d, maxDeliveries)
	}
	return nil
}

// transportFor returns the clients of c.mode.
func transportFor(c *config) (transport, error) {
	switch c.mode {
	case "mqtt":
		return mqttTransport(c), nil
	case "coap":
		return coapTransport(c)
	case "http":
		return httpTransport(c)
	case "xmpp":
		return xmppChatTransport(c)
	case "xmpp-topic":
		return xmppTopicTransport(c)
	case "sse":
		return sseTransport(c)
	}
	return transport{}, fmt.Errorf("unknown mode %q", c.mode)
}

// execute runs the command and returns the exit status.
func execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		if cmd, ok := commands[args[0]]; ok {
			return cmd(ctx, args[1:], stdout, stderr)
		}
	}
	c, err := parseArgs(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "hubload:", err)
		return 2
	}
	if !c.allowRemote {
		targets := []string{c.url}
		if c.mode != "mqtt" && c.mode != "xmpp" {
			targets = append(targets, c.mqttURL)
		}
		if c.subURL != "" {
			targets = append(targets, c.subURL)
		}
		for _, u := range targets {
			if err := checkLoopback(ctx, u); err != nil {
				fmt.Fprintln(stderr, "hubload:", err)
				return 2
			}
		}
	}
	tr, err := transportFor(c)
	if err != nil {
		fmt.Fprintln(stderr, "hubload:", err)
		return 2
	}
	if c.cpuProfile != "" {
		stop, err := startCPUProfile(c.cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, "hubload:", err)
			return 1
		}
		defer stop()
	}
	res, err := runLoad(ctx, c, tr)
	if err != nil {
		fmt.Fprintln(stderr, "hubload:", err)
		return 1
	}
	if c.json {
		if err := writeJSON(stdout, res); err != nil {
			fmt.Fprintln(stderr, "hubload:", err)
			return 1
		}
	} else {
		writeText(stdout, res)
	}
	if c.failOnLoss && (res.Lost > 0 || res.Sent < res.MessagesPlanned) {
		fmt.Fprintf(stderr, "hubload: %d of %d messages sent, %d deliveries lost\n", res.Sent, res.MessagesPlanned, res.Lost)
		return 3
	}
	return 0
}

// startCPUProfile profiles this process into path until stop is called.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("cpu profile %s: %w", path, err)
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}, nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := execute(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
