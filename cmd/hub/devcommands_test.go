package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hubsmith/hub/devices"
	"github.com/hubsmith/hub/store"
)

// TestDeviceAddCommands: --commands declares the device's commands from a
// JSON file; a bad file is a usage error that says what is wrong.
func TestDeviceAddCommands(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := filepath.Join(dir, "lamp.json")
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(good, []byte(`[{"name":"set","params":{"properties":{"on":{"type":"boolean"}},"required":["on"]}},{"name":"reboot"}]`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte(`[{"name":"set","params":{"properties":{"on":{"type":"bool"}}}}]`), 0o600); err != nil {
		t.Fatal(err)
	}
	d := "--data-dir=" + dir
	for _, tt := range []struct {
		args []string
		want result
	}{
		{[]string{"device", "add", "lamp1", "--password", "pw", "--commands", bad, d}, result{"", "hub: device add: --commands $DIR/bad.json: command \"set\": params: parameter \"on\": type \"bool\": must be one of [string number integer boolean] (see \"hub device add --help\")\n", 2}},
		{[]string{"device", "add", "lamp1", "--password", "pw", "--commands", filepath.Join(dir, "none.json"), d}, result{"", "hub: device add: --commands: open $DIR/none.json: no such file or directory (see \"hub device add --help\")\n", 2}},
		{[]string{"device", "add", "lamp1", "--password", "pw", "--commands", good, d}, result{"device lamp1 added (mqtt, password, 2 commands)\n", "", 0}},
	} {
		if got := runCLI(t, dir, tt.args...); got != tt.want {
			t.Errorf("hub %s:\n%s\nwant\n%s", strings.Join(tt.args, " "), got, tt.want)
		}
	}
	st, err := store.Open(t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	reg, err := devices.New(devices.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	cs, err := reg.Commands(t.Context(), "lamp1")
	if err != nil || len(cs) != 2 || cs[0].Name != "set" || !cs[0].Params.IsRequired("on") {
		t.Fatalf("stored commands %+v %v", cs, err)
	}
}
