package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hubsmith/hub/hubtest"
)

func TestDefaultMemoryLimit(t *testing.T) {
	t.Parallel()
	const meminfo = "MemTotal:        1000000 kB\nMemFree:          500000 kB\n"
	share := func(n int64) int64 { return int64(float64(n) * memoryLimitShare) }
	machine := share(1000000 << 10)
	for _, c := range []struct {
		name   string
		env    map[string]string
		files  map[string]string
		bytes  int64
		source string
	}{
		{"GOMEMLIMIT is the user's", map[string]string{"GOMEMLIMIT": "64MiB"}, map[string]string{procMeminfo: meminfo}, 0, "GOMEMLIMIT=64MiB"},
		{"GOGC=off without a limit is the user's", map[string]string{"GOGC": "off"}, map[string]string{procMeminfo: meminfo}, 0, "GOGC=off"},
		{"GOGC alone still gets the limit", map[string]string{"GOGC": "50"}, map[string]string{procMeminfo: meminfo}, machine, procMeminfo},
		{"machine memory", nil, map[string]string{procMeminfo: meminfo}, machine, procMeminfo},
		{"cgroup v2 limit", nil, map[string]string{
			procCgroup: "0::/system.slice/hub.service\n", cgroupRoot + "/system.slice/hub.service/memory.max": "268435456\n", procMeminfo: meminfo,
		}, share(268435456), "hub.service/memory.max"},
		{"cgroup v2 limit of an ancestor", nil, map[string]string{
			procCgroup: "0::/a/b\n", cgroupRoot + "/a/b/memory.max": "max\n", cgroupRoot + "/a/memory.max": "104857600\n", procMeminfo: meminfo,
		}, share(104857600), "/a/memory.max"},
		{"cgroup v2 without a limit", nil, map[string]string{
			procCgroup: "0::/\n", cgroupRoot + "/memory.max": "max\n", procMeminfo: meminfo,
		}, machine, procMeminfo},
		{"cgroup v2 path leaving the root is kept inside it", nil, map[string]string{
			procCgroup: "0::/../../etc\n", cgroupRoot + "/etc/memory.max": "1048576\n", procMeminfo: meminfo,
		}, share(1048576), cgroupRoot + "/etc/memory.max"},
		{"cgroup v1 limit", nil, map[string]string{
			procCgroup: "4:memory:/docker/x\n", cgroupV1Limit: "536870912\n", procMeminfo: meminfo,
		}, share(536870912), cgroupV1Limit},
		{"cgroup v1 unlimited", nil, map[string]string{cgroupV1Limit: "9223372036854771712\n", procMeminfo: meminfo}, machine, procMeminfo},
		{"garbage limit falls back to the machine", nil, map[string]string{
			procCgroup: "0::/\n", cgroupRoot + "/memory.max": "lots\n", procMeminfo: meminfo,
		}, machine, procMeminfo},
		{"garbage meminfo", nil, map[string]string{procMeminfo: "MemTotal: many kB\n"}, 0, "memory size unknown"},
		{"meminfo in other units", nil, map[string]string{procMeminfo: "MemTotal: 1000 MB\n"}, 0, "memory size unknown"},
		{"nothing readable", nil, nil, 0, "memory size unknown"},
	} {
		t.Run(c.name, func(t *testing.T) {
			getenv := func(k string) string { return c.env[k] }
			read := func(name string) ([]byte, error) {
				if v, ok := c.files[name]; ok {
					return []byte(v), nil
				}
				return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
			}
			got := defaultMemoryLimit(getenv, read)
			if got.bytes != c.bytes || !strings.Contains(got.source, c.source) {
				t.Errorf("got %d from %q, want %d from %q", got.bytes, got.source, c.bytes, c.source)
			}
		})
	}
}

// TestServeMemoryLimit: "hub serve" runs with the default soft memory
// limit unless the environment sets one, which is then the limit in force.
// Each case is a process of its own (the limit is the process's).
func TestServeMemoryLimit(t *testing.T) {
	t.Parallel()
	want := defaultMemoryLimit(os.Getenv, os.ReadFile)
	if os.Getenv("GOMEMLIMIT") != "" || os.Getenv("GOGC") == "off" {
		t.Skip("the environment sets the limit already")
	}
	if want.bytes == 0 {
		t.Skipf("no memory size on this machine: %s", want.source)
	}
	for _, c := range []struct {
		name string
		env  []string
		want int64
	}{
		{"default", nil, want.bytes},
		{"GOMEMLIMIT wins", []string{"GOMEMLIMIT=123MiB"}, 123 << 20},
		{"GOGC=off means no limit", []string{"GOGC=off"}, math.MaxInt64},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperServeMemoryLimit$")
			cmd.Env = append(append(os.Environ(), "HUB_TEST_MEMORY_LIMIT="+t.TempDir()), c.env...)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("helper: %v\n%s", err, out)
			}
			_, line, ok := bytes.Cut(out, []byte("memory limit "))
			if !ok {
				t.Fatalf("helper printed no limit:\n%s", out)
			}
			got, err := strconv.ParseInt(string(bytes.Fields(line)[0]), 10, 64)
			if err != nil || got != c.want {
				t.Fatalf("limit %d (%v), want %d\n%s", got, err, c.want, out)
			}
		})
	}
}

// TestHelperServeMemoryLimit is the process of TestServeMemoryLimit: it
// serves (no listeners) until the hub is up, prints the limit in force and
// stops.
func TestHelperServeMemoryLimit(t *testing.T) {
	dir := os.Getenv("HUB_TEST_MEMORY_LIMIT")
	if dir == "" {
		t.Skip("helper process only")
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var log hubtest.LogBuffer
	done := make(chan int, 1)
	go func() {
		var stdout strings.Builder
		done <- runMain(ctx, []string{"serve", "--data-dir", dir, "--mqtt-addr", "off", "--coap-addr", "off",
			"--xmpp-addr", "off", "--http-addr", "off", "--log-level", "debug"}, &stdout, &log)
	}()
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(log.String(), "hub: serving"); {
		if time.Now().After(deadline) {
			t.Fatalf("not serving: %s", log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Printf("memory limit %d\n", debug.SetMemoryLimit(-1))
	cancel()
	if code := <-done; code != 0 {
		t.Fatal(errors.New(log.String()))
	}
}
