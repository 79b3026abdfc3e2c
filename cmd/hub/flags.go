package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// cmdFlags is the flag set of one command with what its --help prints.
type cmdFlags struct {
	*flag.FlagSet
	name     string // "hub user add"
	synopsis string // "hub user add NAME --password P [flags]"
	about    string // what the command does, printed under the synopsis
}

func newFlags(name, synopsis, about string) *cmdFlags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	// The flag package would print its own message and the whole usage
	// on every mistake; parse reports one line instead, and --help goes
	// to stdout.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return &cmdFlags{FlagSet: fs, name: name, synopsis: synopsis, about: about}
}

// usagef returns a usage error of this command: "user add: msg".
func (c *cmdFlags) usagef(format string, args ...any) error {
	return usagef(c.name, "%s: %s", strings.TrimPrefix(c.name, "hub "), fmt.Sprintf(format, args...))
}

// parse parses args, flags and positional arguments in any order (so
// "user add NAME --password P" and "user add --password P NAME" both
// work; after "--" everything is positional), and returns the positional
// ones. On --help it prints the usage to stdout and returns errHelp.
func (c *cmdFlags) parse(args []string, stdout io.Writer) ([]string, error) {
	var pos []string
	for len(args) > 0 {
		err := c.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			c.printUsage(stdout)
			return nil, errHelp
		}
		if err != nil {
			return nil, c.usagef("%s", flagMessage(err))
		}
		rest := c.Args()
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) > 0 {
			pos = append(pos, rest[0])
			rest = rest[1:]
		}
		args = rest
	}
	return pos, nil
}

// flagMessage rewords the flag package's errors in the --flag spelling
// the usage uses.
func flagMessage(err error) string {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		return "unknown flag --" + name
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		return "flag --" + name + " needs a value"
	}
	if strings.HasPrefix(msg, "invalid ") {
		// invalid value "x" for flag -name: reason
		// invalid boolean value "x" for -name: reason
		msg = strings.Replace(msg, " for flag -", " for --", 1)
		if !strings.Contains(msg, " for --") {
			msg = strings.Replace(msg, " for -", " for --", 1)
		}
	}
	return msg
}

// printUsage writes the synopsis, the description and every flag.
func (c *cmdFlags) printUsage(w io.Writer) {
	fmt.Fprintf(w, "Usage: %s\n", c.synopsis)
	if c.about != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimRight(c.about, "\n"))
	}
	first := true
	c.VisitAll(func(f *flag.Flag) {
		if first {
			fmt.Fprintf(w, "\nFlags:\n")
			first = false
		}
		value, text := flag.UnquoteUsage(f)
		if value != "" {
			value = " " + value
		}
		if isBool(f) {
			value = ""
		}
		if f.DefValue != "" && f.DefValue != "false" {
			if strings.HasSuffix(text, ")") && strings.Contains(text, " (env ") {
				text = strings.TrimSuffix(text, ")") + ", default " + f.DefValue + ")"
			} else {
				text += " (default " + f.DefValue + ")"
			}
		}
		fmt.Fprintf(w, "  --%s%s\n    \t%s\n", f.Name, value, text)
	})
}

func isBool(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}
