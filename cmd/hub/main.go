// Command hub is the IoT messaging hub: MQTT, CoAP, XMPP and REST on one
// pub/sub bus, in one binary for an edge gateway.
//
//	hub serve [flags]          run the hub
//	hub user add NAME ...      add a user to the store
//	hub device add ID ...      register a device
//	hub version                print the version
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintln(os.Stderr, "hub:", err)
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "hub:", err)
		os.Exit(1)
	}
}

// usageError marks a mistake on the command line (exit status 2).
type usageError struct{ error }

const usage = `usage:
  hub serve [--config hub.yaml] [--data-dir ./hub-data] [listener flags]
  hub user add NAME --password P [--role admin|user|device] [--data-dir DIR]
  hub device add ID [--protocol mqtt|coap|xmpp] [--password P | --psk HEX] [--data-dir DIR]
  hub version
Run "hub serve --help" for the listener flags.`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return usageError{errors.New("no command")}
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stderr)
	case "user":
		if len(args) < 2 || args[1] != "add" {
			return usageError{errors.New("want: hub user add NAME --password P")}
		}
		return userAdd(ctx, args[2:], stdout, stderr)
	case "device":
		if len(args) < 2 || args[1] != "add" {
			return usageError{errors.New("want: hub device add ID")}
		}
		return deviceAdd(ctx, args[2:], stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "hub", version)
		return nil
	case "help", "--help", "-h":
		fmt.Fprintln(stdout, usage)
		return nil
	}
	fmt.Fprintln(stderr, usage)
	return usageError{fmt.Errorf("unknown command %q", args[0])}
}
