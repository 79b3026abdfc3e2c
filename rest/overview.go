package rest

import (
	"fmt"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/store"
)

// Overview is the body of GET /api/v1/admin/overview: what the
// dashboard shows first, gathered by the hub (gateway.Hub.Overview) in
// one call. Counters are totals since the hub started; the dashboard
// turns two readings into rates.
type Overview struct {
	// Time is when it was gathered (the rates' clock).
	Time time.Time `json:"time"`
	// Node is the hub's node id.
	Node string `json:"node"`
	// Status and Errors are /healthz's.
	Status string   `json:"status"`
	Errors []string `json:"errors,omitempty"`
	// Host is the machine's and the hub process's health.
	Host HostHealth `json:"host"`
	// Listeners are every adapter's listeners with their state.
	Listeners []adapters.ListenerStatus `json:"listeners"`
	// Clients are the connected clients per protocol.
	Clients []ClientCount `json:"clients"`
	// Traffic is the bus's traffic per protocol and QoS: in (published),
	// out (delivered) and dropped, as totals.
	Traffic []broker.Flow `json:"traffic"`
	// Bridges are the configured upstream bridges.
	Bridges []BridgeStatus `json:"bridges"`
	// Alarms are what needs an operator: store errors, disk pressure,
	// dropped messages, failed logins, listeners that do not accept.
	Alarms []Alarm `json:"alarms"`
	// Devices are the registered devices with presence and last reading.
	Devices []DeviceOverview `json:"devices"`
}

// HostHealth is the host part of Overview.
type HostHealth struct {
	// CPUPercent is the host's busy CPU time since the previous overview
	// (or since boot), in percent of all CPUs.
	CPUPercent float64 `json:"cpu_percent"`
	// ProcessCPUPercent is the hub process's CPU time over the same span,
	// in percent of one CPU (as top shows it).
	ProcessCPUPercent float64 `json:"process_cpu_percent"`
	// CPUs is the number of CPUs the hub may use.
	CPUs int `json:"cpus"`
	// MemTotal and MemAvailable are the host's memory in bytes.
	MemTotal     uint64 `json:"mem_total"`
	MemAvailable uint64 `json:"mem_available"`
	// ProcessRSS is the hub process's resident memory in bytes.
	ProcessRSS uint64 `json:"process_rss"`
	// DiskFree and DiskTotal are the store's file system, in bytes (free:
	// what the hub may use).
	DiskFree  uint64 `json:"disk_free"`
	DiskTotal uint64 `json:"disk_total"`
	// DataDir is the store's directory.
	DataDir string `json:"data_dir"`
	// UptimeSeconds is the hub's; HostUptimeSeconds the machine's.
	UptimeSeconds     float64 `json:"uptime_seconds"`
	HostUptimeSeconds float64 `json:"host_uptime_seconds"`
	// Goroutines is the hub's goroutine count.
	Goroutines int `json:"goroutines"`
}

// ClientCount is the number of connected clients of one protocol (MQTT
// clients, XMPP sessions, CoAP endpoints, REST streams).
type ClientCount struct {
	Protocol  string `json:"protocol"`
	Connected int    `json:"connected"`
}

// BridgeStatus is one upstream bridge.
type BridgeStatus struct {
	Name      string `json:"name"`
	URL       string `json:"url"`
	Connected bool   `json:"connected"`
	// Error says why it is not connected.
	Error string `json:"error,omitempty"`
	// Queued is how many envelopes wait in its durable queue, and
	// OldestQueued when the oldest of them entered the hub.
	Queued       int        `json:"queued"`
	OldestQueued *time.Time `json:"oldest_queued,omitempty"`
}

// Alarm severities.
const (
	AlarmWarning  = "warning"
	AlarmCritical = "critical"
)

// Alarm is one condition that needs an operator.
type Alarm struct {
	// ID names the condition ("store_errors", "disk_pressure",
	// "dropped_messages", "failed_logins", "listener", "store_integrity").
	ID string `json:"id"`
	// Severity is AlarmWarning or AlarmCritical.
	Severity string `json:"severity"`
	// Message says what is wrong, with numbers.
	Message string `json:"message"`
}

// DeviceOverview is a device with its last reading: the newest retained
// value under devices/{id}/ (commands and responses left out).
type DeviceOverview struct {
	store.Device
	Last *EnvelopeJSON `json:"last,omitempty"`
}

// overview handles GET /api/v1/admin/overview (admins only).
func (a *Adapter) overview(c *gin.Context) {
	if a.cfg.Overview == nil {
		a.fail(c, fmt.Errorf("%w: this hub has no overview", errNotFound))
		return
	}
	o, err := a.cfg.Overview(c.Request.Context())
	if err != nil {
		a.fail(c, fmt.Errorf("rest: overview: %w", err))
		return
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, o)
}

// EnvelopeView renders e as the API shows envelopes (EnvelopeJSON), for
// the overview's last readings (admins only, so with the origin).
func EnvelopeView(e *broker.Envelope) *EnvelopeJSON {
	j := envelopeJSON(e, 2, true)
	return &j
}
