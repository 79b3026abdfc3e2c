package gateway

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/rest"
)

func TestParseCPUTimes(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, in string
		want     cpuTimes
		err      bool
	}{
		{"linux 5", "cpu  100 5 50 800 20 3 2 0 0 0\ncpu0 50 2 25 400 10 1 1 0 0 0\nintr 1\n", cpuTimes{busy: 160, total: 980}, false},
		{"too few", "cpu 10 0 10\n", cpuTimes{}, true},
		{"old kernel, 4 values", "cpu 10 0 10 80\n", cpuTimes{busy: 20, total: 100}, false},
		{"no cpu line", "intr 1\n", cpuTimes{}, true},
		{"not a number", "cpu 1 x 1 1 1\n", cpuTimes{}, true},
		{"empty", "", cpuTimes{}, true},
	} {
		got, err := parseCPUTimes(c.in)
		if (err != nil) != c.err || got != c.want {
			t.Errorf("%s: %+v %v, want %+v err %v", c.name, got, err, c.want, c.err)
		}
	}
	a, b := cpuTimes{busy: 100, total: 1000}, cpuTimes{busy: 150, total: 1100}
	if p := b.busyPercentSince(a); p != 50 {
		t.Errorf("busy since: %v, want 50", p)
	}
	if p := a.busyPercentSince(b); p != 10 { // counters went back (a reboot): since boot
		t.Errorf("busy since a later reading: %v, want 10", p)
	}
	if p := a.busyPercentSince(a); p != 0 {
		t.Errorf("busy over no time: %v", p)
	}
}

func TestParseMeminfo(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, in string
		want     meminfo
		err      bool
	}{
		{"modern", "MemTotal:       16000 kB\nMemFree:  1000 kB\nMemAvailable:   8000 kB\n", meminfo{16000 << 10, 8000 << 10}, false},
		{"no MemAvailable", "MemTotal: 100 kB\nMemFree: 10 kB\nBuffers: 5 kB\nCached: 20 kB\n", meminfo{100 << 10, 35 << 10}, false},
		{"no MemTotal", "MemFree: 10 kB\n", meminfo{}, true},
		{"garbage lines", "junk\nMemTotal: x kB\nMemTotal: 4 kB\n:\n", meminfo{4 << 10, 0}, false},
	} {
		got, err := parseMeminfo(c.in)
		if (err != nil) != c.err || got != c.want {
			t.Errorf("%s: %+v %v, want %+v err %v", c.name, got, err, c.want, c.err)
		}
	}
}

func TestParseUptimeAndStatm(t *testing.T) {
	t.Parallel()
	if v, err := parseUptime("350735.47 234388.90\n"); err != nil || v != 350735.47 {
		t.Errorf("uptime: %v %v", v, err)
	}
	for _, bad := range []string{"", "x", "-1 2"} {
		if _, err := parseUptime(bad); err == nil {
			t.Errorf("uptime %q: no error", bad)
		}
	}
	if v, err := parseStatmRSS("1000 250 30 1 0 100 0\n", 4096); err != nil || v != 250*4096 {
		t.Errorf("statm: %v %v", v, err)
	}
	for _, bad := range []string{"", "1", "1 x"} {
		if _, err := parseStatmRSS(bad, 4096); err == nil {
			t.Errorf("statm %q: no error", bad)
		}
	}
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"tcp://u:secret@broker:1883": "tcp://u@broker:1883",
		"tcp://broker:1883":          "tcp://broker:1883",
		"mqtts://u@h:8883":           "mqtts://u@h:8883",
		"ws://h/path@x":              "ws://h/path@x",
		"nonsense":                   "nonsense",
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestAlarms holds the alarm rules: disk thresholds, a counter's alarm
// up while it grew within alarmHold, listeners that do not accept, a
// damaged store.
func TestAlarms(t *testing.T) {
	t.Parallel()
	h := &Hub{}
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	ok := adapters.HealthReport{Status: adapters.HealthOK, Store: &adapters.StoreHealth{IntegrityOK: true}}
	disk := func(free, total uint64) rest.HostHealth {
		return rest.HostHealth{DiskFree: free, DiskTotal: total, DataDir: "/d"}
	}
	ids := func(as []rest.Alarm) string {
		var s []string
		for _, a := range as {
			s = append(s, a.ID+":"+a.Severity)
		}
		return strings.Join(s, ",")
	}
	for _, c := range []struct {
		name                string
		at                  time.Duration
		health              adapters.HealthReport
		host                rest.HostHealth
		writes, drops, logs uint64
		want                string
	}{
		{"quiet", 0, ok, disk(50<<30, 100<<30), 0, 0, 0, ""},
		{"disk warning", 0, ok, disk(8<<30, 100<<30), 0, 0, 0, "disk_pressure:warning"},
		{"disk small but fine by share", 0, ok, disk(400<<20, 1<<30), 0, 0, 0, "disk_pressure:warning"},
		{"disk critical", 0, ok, disk(4<<30, 100<<30), 0, 0, 0, "disk_pressure:critical"},
		{"failed logins", time.Minute, ok, disk(50<<30, 100<<30), 0, 0, 3, "failed_logins:warning"},
		{"still up", 5 * time.Minute, ok, disk(50<<30, 100<<30), 0, 0, 3, "failed_logins:warning"},
		{"gone after the hold", 12 * time.Minute, ok, disk(50<<30, 100<<30), 0, 0, 3, ""},
		{"drops and store errors", 13 * time.Minute, ok, disk(50<<30, 100<<30), 1, 7, 3, "store_errors:critical,dropped_messages:warning"},
		{"listener down, store damaged", 14 * time.Minute, adapters.HealthReport{
			Listeners: []adapters.ListenerStatus{{Adapter: "mqtt", Name: "mqtt", Addr: "x", State: adapters.ListenerFailing, Error: "EMFILE"}},
			Store:     &adapters.StoreHealth{IntegrityOK: false, Problems: []string{"page 3"}},
		}, disk(50<<30, 100<<30), 1, 7, 3, "listener:critical,store_integrity:critical,store_errors:critical,dropped_messages:warning"},
	} {
		got := h.alarms(t0.Add(c.at), c.health, c.host, c.writes, c.drops, c.logs)
		if ids(got) != c.want {
			t.Errorf("%s: %s, want %s", c.name, ids(got), c.want)
		}
	}
}

func FuzzParseProc(f *testing.F) {
	f.Add("cpu  100 5 50 800 20 3 2 0 0 0\n")
	f.Add("MemTotal: 100 kB\nMemAvailable: 50 kB\n")
	f.Add("350735.47 234388.90\n")
	f.Add("1000 250 30 1 0 100 0\n")
	f.Fuzz(func(t *testing.T, s string) {
		if c, err := parseCPUTimes(s); err == nil && c.busy > c.total {
			t.Fatalf("busy %d > total %d", c.busy, c.total)
		}
		if m, err := parseMeminfo(s); err == nil && m.available > m.total && !strings.Contains(s, "MemAvailable") {
			t.Fatalf("available %d > total %d without MemAvailable", m.available, m.total)
		}
		if v, err := parseUptime(s); err == nil && (v < 0 || math.IsNaN(v)) {
			t.Fatalf("uptime %v", v)
		}
		_, _ = parseStatmRSS(s, 4096)
	})
}
