package gateway

import (
	"context"
	"fmt"
	"io/fs"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/bridge"
	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/dashboard"
	"github.com/hubsmith/hub/rest"
)

// processStart is when the hub process started, for its uptime.
var processStart = time.Now()

// Thresholds of the dashboard's alarms.
const (
	// Disk pressure: free space of the store's file system below these
	// is a warning, below the critical ones critical.
	diskWarnFraction = 0.10
	diskWarnBytes    = 500 << 20
	diskCritFraction = 0.05
	diskCritBytes    = 100 << 20
	// A counter alarm (dropped messages, failed logins) stays up this
	// long after the counter last grew.
	alarmHold = 10 * time.Minute
	// overviewDevices bounds the devices listed.
	overviewDevices = 1000
)

// overviewState is what Overview keeps between calls: the previous CPU
// readings (for rates) and when the alarm counters last grew.
type overviewState struct {
	mu       sync.Mutex
	cpu      cpuTimes
	proc     time.Duration
	at       time.Time
	counters map[string]uint64
	grewAt   map[string]time.Time
}

// dashboardFS is the embedded web dashboard (dashboard.FS).
func (h *Hub) dashboardFS() fs.FS { return dashboard.FS() }

// Overview gathers what the dashboard shows first: host health, the
// listeners, connected clients and traffic per protocol (and QoS),
// bridges, alarms, and devices with presence and last reading. It is
// GET /api/v1/admin/overview.
func (h *Hub) Overview(ctx context.Context) (*rest.Overview, error) {
	now := time.Now()
	health := h.HealthReport()
	o := &rest.Overview{
		Time: now.UTC(), Node: h.cfg.Node, Status: health.Status, Errors: health.Errors,
		Listeners: health.Listeners, Clients: []rest.ClientCount{}, Traffic: []broker.Flow{},
		Bridges: []rest.BridgeStatus{}, Alarms: []rest.Alarm{}, Devices: []rest.DeviceOverview{},
	}
	if o.Listeners == nil {
		o.Listeners = []adapters.ListenerStatus{}
	}
	o.Host = h.hostHealth(now)
	if m, ok := h.Bus.(*broker.Memory); ok {
		o.Traffic = m.Flows()
	}
	mfs, err := h.Registry.Gather()
	if err != nil {
		// A collector's failure leaves the others' families; say so.
		h.log.Debug("hub: overview: gather metrics", "err", err)
	}
	metric := func(name string) (float64, bool) {
		i := slices.IndexFunc(mfs, func(f *dto.MetricFamily) bool { return f.GetName() == name })
		if i < 0 {
			return 0, false
		}
		return sumFamily(mfs[i]), true
	}
	for _, c := range []struct{ proto, metric string }{
		{broker.ProtoMQTT, "hub_mqtt_clients_connected"},
		{broker.ProtoCoAP, "hub_coap_endpoints"},
		{broker.ProtoXMPP, "hub_xmpp_sessions"},
		{broker.ProtoREST, "hub_rest_streams"},
	} {
		v, ok := metric(c.metric)
		if ok || c.proto == broker.ProtoREST { // no REST stream yet: no series, and 0
			o.Clients = append(o.Clients, rest.ClientCount{Protocol: c.proto, Connected: int(v)})
		}
	}
	bridges, err := h.bridges(ctx)
	if err != nil {
		return nil, err
	}
	o.Bridges = bridges
	if o.Devices, err = h.deviceOverview(ctx); err != nil {
		return nil, err
	}
	writeErrs, _ := metric("hub_store_write_errors_total")
	var dropped uint64
	for _, f := range o.Traffic {
		dropped += f.Dropped
	}
	o.Alarms = h.alarms(now, health, o.Host, uint64(writeErrs), dropped, h.Auth.FailedLogins())
	return o, nil
}

// sumFamily adds up the values of every series of a gauge or counter
// family.
func sumFamily(f *dto.MetricFamily) float64 {
	var v float64
	for _, m := range f.GetMetric() {
		switch {
		case m.Gauge != nil:
			v += m.Gauge.GetValue()
		case m.Counter != nil:
			v += m.Counter.GetValue()
		case m.Untyped != nil:
			v += m.Untyped.GetValue()
		}
	}
	return v
}

func (h *Hub) bridges(ctx context.Context) ([]rest.BridgeStatus, error) {
	out := []rest.BridgeStatus{}
	h.mu.Lock()
	bridges := h.cfg.Bridges
	h.mu.Unlock()
	for _, bc := range bridges {
		s := rest.BridgeStatus{Name: bc.Name, URL: redactURL(bc.URL)}
		if err := h.BridgeHealthy(bc.Name); err != nil {
			s.Error = err.Error()
		} else {
			s.Connected = true
		}
		id := bridge.SubscriberID(bc.Name)
		n, err := h.Store.QueueLen(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("hub: overview: bridge %q: %w", bc.Name, err)
		}
		s.Queued = n
		if n > 0 {
			q, err := h.Store.Dequeue(ctx, id, 0, 1)
			if err != nil {
				return nil, fmt.Errorf("hub: overview: bridge %q: %w", bc.Name, err)
			}
			if len(q) > 0 && q[0].Envelope != nil {
				t := q[0].Envelope.Time.UTC()
				s.OldestQueued = &t
			}
		}
		out = append(out, s)
	}
	return out, nil
}

// redactURL drops a password from a URL ("tcp://u:p@h" → "tcp://u@h").
func redactURL(u string) string {
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok {
		return u
	}
	userinfo, host, ok := strings.Cut(rest, "@")
	if !ok || strings.Contains(userinfo, "/") {
		return u
	}
	user, _, _ := strings.Cut(userinfo, ":")
	return scheme + "://" + user + "@" + host
}

// deviceOverview lists the devices with the newest retained value each
// has under devices/{id}/ (not its commands and responses).
func (h *Hub) deviceOverview(ctx context.Context) ([]rest.DeviceOverview, error) {
	ds, err := h.Devices.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("hub: overview: devices: %w", err)
	}
	if len(ds) > overviewDevices {
		ds = ds[:overviewDevices]
	}
	rs, err := h.Bus.Retained(ctx, "devices/#")
	if err != nil {
		return nil, fmt.Errorf("hub: overview: retained: %w", err)
	}
	last := map[string]*broker.Envelope{}
	for _, e := range rs {
		id, rest, ok := strings.Cut(strings.TrimPrefix(e.Topic, "devices/"), "/")
		if !ok || rest == "commands" || rest == "responses" || strings.HasPrefix(rest, "commands/") || strings.HasPrefix(rest, "responses/") {
			continue
		}
		if p := last[id]; p == nil || e.Time.After(p.Time) {
			last[id] = e
		}
	}
	out := make([]rest.DeviceOverview, 0, len(ds))
	for _, d := range ds {
		do := rest.DeviceOverview{Device: d}
		if e := last[d.ID]; e != nil {
			do.Last = rest.EnvelopeView(e)
		}
		out = append(out, do)
	}
	return out, nil
}

// alarms turns the health report and counters into the dashboard's
// alarms. A counter's alarm is up while it grew within alarmHold.
func (h *Hub) alarms(now time.Time, health adapters.HealthReport, host rest.HostHealth, writeErrs, dropped, failedLogins uint64) []rest.Alarm {
	out := []rest.Alarm{}
	for _, l := range health.Listeners {
		if l.State != adapters.ListenerAccepting {
			msg := fmt.Sprintf("%s listener %s (%s) is %s", l.Adapter, l.Name, l.Addr, l.State)
			if l.Error != "" {
				msg += ": " + l.Error
			}
			out = append(out, rest.Alarm{ID: "listener", Severity: rest.AlarmCritical, Message: msg})
		}
	}
	if health.Store != nil && !health.Store.IntegrityOK {
		out = append(out, rest.Alarm{ID: "store_integrity", Severity: rest.AlarmCritical,
			Message: "the store failed its integrity check at start: " + strings.Join(health.Store.Problems, "; ")})
	}
	if host.DiskTotal > 0 {
		free := float64(host.DiskFree) / float64(host.DiskTotal)
		sev := ""
		switch {
		case free < diskCritFraction || host.DiskFree < diskCritBytes:
			sev = rest.AlarmCritical
		case free < diskWarnFraction || host.DiskFree < diskWarnBytes:
			sev = rest.AlarmWarning
		}
		if sev != "" {
			out = append(out, rest.Alarm{ID: "disk_pressure", Severity: sev,
				Message: fmt.Sprintf("%d MiB free (%.1f%%) on the store's disk (%s)", host.DiskFree>>20, 100*free, host.DataDir)})
		}
	}
	h.ov.mu.Lock()
	defer h.ov.mu.Unlock()
	if h.ov.counters == nil {
		h.ov.counters, h.ov.grewAt = map[string]uint64{}, map[string]time.Time{}
	}
	for _, c := range []struct {
		id, sev string
		n       uint64
		what    string
	}{
		{"store_errors", rest.AlarmCritical, writeErrs, "store writes failed"},
		{"dropped_messages", rest.AlarmWarning, dropped, "messages dropped (slow or full subscribers, expiry)"},
		{"failed_logins", rest.AlarmWarning, failedLogins, "logins refused for bad credentials"},
	} {
		if c.n > h.ov.counters[c.id] {
			h.ov.grewAt[c.id] = now
		}
		h.ov.counters[c.id] = c.n
		if at, ok := h.ov.grewAt[c.id]; ok && now.Sub(at) < alarmHold {
			out = append(out, rest.Alarm{ID: c.id, Severity: c.sev,
				Message: fmt.Sprintf("%d %s since start, the latest %s ago", c.n, c.what, now.Sub(at).Round(time.Second))})
		}
	}
	return out
}

// hostHealth reads the host's and the process's health; readings that
// fail (no /proc) are left zero.
func (h *Hub) hostHealth(now time.Time) rest.HostHealth {
	hh := rest.HostHealth{CPUs: runtime.GOMAXPROCS(0), DataDir: h.cfg.DataDir, Goroutines: runtime.NumGoroutine(),
		UptimeSeconds: now.Sub(processStart).Seconds()}
	cpu, cpuErr := readCPUTimes()
	proc, procErr := processCPU()
	h.ov.mu.Lock()
	prevCPU, prevProc, prevAt := h.ov.cpu, h.ov.proc, h.ov.at
	if cpuErr == nil {
		h.ov.cpu = cpu
	}
	if procErr == nil {
		h.ov.proc, h.ov.at = proc, now
	}
	h.ov.mu.Unlock()
	if cpuErr == nil {
		hh.CPUPercent = cpu.busyPercentSince(prevCPU)
	}
	if procErr == nil {
		span := now.Sub(prevAt)
		if prevAt.IsZero() {
			span, prevProc = now.Sub(processStart), 0
		}
		if span > 0 {
			hh.ProcessCPUPercent = 100 * float64(proc-prevProc) / float64(span)
		}
	}
	if m, err := readMeminfo(); err == nil {
		hh.MemTotal, hh.MemAvailable = m.total, m.available
	}
	hh.ProcessRSS, _ = processRSS()
	hh.DiskFree, hh.DiskTotal, _ = diskSpace(h.cfg.DataDir)
	hh.HostUptimeSeconds, _ = hostUptime()
	return hh
}
