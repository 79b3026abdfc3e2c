package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/hubsmith/hub/devices"
)

// readCommands reads the --commands file of "hub device add": a JSON
// declaration as devices.ParseCommands takes it ("" reads nothing).
func readCommands(path string) ([]devices.Command, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--commands: %w", err)
	}
	cs, err := devices.ParseCommands(b)
	if err != nil {
		return nil, fmt.Errorf("--commands %s: %s", path, strings.TrimPrefix(err.Error(), devices.ErrInvalid.Error()+": "))
	}
	return cs, nil
}

// commandCount is ", N commands" for the line "hub device add" prints.
func commandCount(cs []devices.Command) string {
	switch len(cs) {
	case 0:
		return ""
	case 1:
		return ", 1 command"
	}
	return fmt.Sprintf(", %d commands", len(cs))
}
