// Command hub is the IoT messaging hub: MQTT, CoAP, XMPP and REST on one
// pub/sub bus, in one binary for an edge gateway.
//
//	hub serve [flags]                      run the hub
//	hub user add|list|delete|passwd ...    manage the users in the store
//	hub device add|list|delete ...         manage the registered devices
//	hub config check FILE                  check a configuration file
//	hub version                            print the version and VCS revision
//
// "hub COMMAND --help" prints a command's flags. Exit status: 0 on
// success (and for --help), 1 when the command failed, 2 for a mistake on
// the command line.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := runMain(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// usageError marks a mistake on the command line (exit status 2). cmd,
// when set, is the command whose --help the message points to.
type usageError struct {
	cmd string
	err error
}

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// usagef returns a usageError for cmd ("" for hub itself).
func usagef(cmd, format string, args ...any) error {
	return usageError{cmd: cmd, err: fmt.Errorf(format, args...)}
}

// errHelp reports that help was asked for and printed (exit status 0).
var errHelp = errors.New("help printed")

// runMain runs the command line args and returns the exit status. Every
// error is printed once, on one line, as "hub: ...".
func runMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	err := run(ctx, args, stdout, stderr)
	var ue usageError
	switch {
	case err == nil, errors.Is(err, errHelp):
		return 0
	case errors.As(err, &ue):
		if ue.cmd != "" {
			fmt.Fprintf(stderr, "hub: %s (see %q)\n", err, ue.cmd+" --help")
		} else {
			fmt.Fprintf(stderr, "hub: %s (see %q)\n", err, "hub --help")
		}
		return 2
	}
	fmt.Fprintln(stderr, "hub:", err)
	return 1
}

const usage = `hub is an IoT messaging hub: MQTT, CoAP, XMPP and REST clients meet on one bus.

Usage:
  hub serve [--config hub.yaml] [--data-dir ./hub-data] [listener flags]
  hub user add NAME --password P [--role admin|user|device]
  hub user list | delete NAME | passwd NAME --password P
  hub device add ID [--protocol mqtt|coap|xmpp] [--password P] [--psk HEX] [--commands FILE.json]
  hub device list | delete ID
  hub config check FILE
  hub version

The user and device commands work on the store in --data-dir DIR
(default ./hub-data, or $HUB_DATA_DIR), also while the hub runs.
Run "hub COMMAND --help" for the flags of a command.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usagef("", "no command given")
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stdout, stderr)
	case "user":
		return userCommand(ctx, args[1:], stdout, stderr)
	case "device":
		return deviceCommand(ctx, args[1:], stdout, stderr)
	case "config":
		return configCommand(args[1:], stdout)
	case "version", "--version":
		return versionCommand(args[1:], stdout)
	case "help", "--help", "-help", "-h":
		if len(args) > 1 && args[0] == "help" {
			// "hub help user add" is "hub user add --help".
			return run(ctx, append(args[1:], "--help"), stdout, stderr)
		}
		fmt.Fprint(stdout, usage)
		return errHelp
	}
	if len(args[0]) > 0 && args[0][0] == '-' {
		return usagef("hub", "unknown flag %s: flags go after the command, as in \"hub serve %s\"", args[0], args[0])
	}
	return usagef("hub", "unknown command %q", args[0])
}

// subcommand picks the subcommand of "hub user" or "hub device".
func subcommand(group string, args []string, subs string, stdout io.Writer, groupUsage string) (string, []string, error) {
	if len(args) == 0 {
		return "", nil, usagef(group, "%s: missing subcommand: %s", strings.TrimPrefix(group, "hub "), subs)
	}
	switch args[0] {
	case "help", "--help", "-help", "-h":
		fmt.Fprint(stdout, groupUsage)
		return "", nil, errHelp
	}
	return args[0], args[1:], nil
}
