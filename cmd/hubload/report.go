package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// Result is what one run measured; --json prints it as is.
type Result struct {
	Mode            string `json:"mode"`
	URL             string `json:"url"`
	QoS             int    `json:"qos"`
	Size            int    `json:"size"`
	Publishers      int    `json:"publishers"`
	Subscribers     int    `json:"subscribers"`
	Topics          int    `json:"topics"`
	Fanout          bool   `json:"fanout"`
	MessagesPlanned uint64 `json:"messages_planned"`
	// Attempted counts messages handed to the client; Sent those that
	// completed (for MQTT QoS >= 1: acknowledged). Expected and Lost are
	// computed from Sent, so a delivered message whose acknowledgement
	// never came shows in Received but not in Expected.
	Attempted      uint64         `json:"attempted"`
	Sent           uint64         `json:"sent"`
	ErrorCount     int            `json:"error_count"`
	Errors         []string       `json:"errors,omitempty"`
	TimedOut       bool           `json:"timed_out"`
	Interrupted    bool           `json:"interrupted"`
	Expected       uint64         `json:"expected"`
	Received       uint64         `json:"received"`
	Duplicates     uint64         `json:"duplicates"`
	Lost           uint64         `json:"lost"`
	LossPct        float64        `json:"loss_pct"`
	Invalid        uint64         `json:"invalid"`
	Unexpected     uint64         `json:"unexpected"`
	PublishSeconds float64        `json:"publish_seconds"`
	SendRate       float64        `json:"send_rate_msg_s"`
	ReceiveSeconds float64        `json:"receive_seconds"`
	ReceiveRate    float64        `json:"receive_rate_msg_s"`
	Latency        LatencySummary `json:"latency"`
	// WallSeconds runs from the first publication to the end of the drain;
	// the CPU figures cover the same window.
	WallSeconds      float64 `json:"wall_seconds"`
	ClientCPUSeconds float64 `json:"client_cpu_seconds"`
	// ClientCPUMicrosPerDelivery is hubload's own CPU over the deliveries
	// received: what the load generator cost per message.
	ClientCPUMicrosPerDelivery float64 `json:"client_cpu_us_per_delivery"`
	// MQTTClient is the MQTT client of the run's MQTT connections (lean or
	// paho); empty in modes without MQTT.
	MQTTClient string       `json:"mqtt_client,omitempty"`
	Target     *TargetUsage `json:"target,omitempty"`
}

// TargetUsage is what the process under test (--pid) used: memory in KiB
// from /proc/PID/status, CPU from /proc/PID/stat.
type TargetUsage struct {
	PID int `json:"pid"`
	// CPUSeconds is the user plus system time it used during the run
	// (Result.WallSeconds), and CPUMicrosPerDelivery that over the
	// deliveries received.
	CPUSeconds           float64 `json:"cpu_seconds"`
	CPUMicrosPerDelivery float64 `json:"cpu_us_per_delivery"`
	// VmHWMKiB is the kernel's peak resident set over the process's life.
	VmHWMKiB uint64 `json:"vm_hwm_kib"`
	// VmRSSKiB is the resident set at the end of the run.
	VmRSSKiB uint64 `json:"vm_rss_kib"`
	// StartRSSKiB is the resident set once every client was connected.
	StartRSSKiB uint64 `json:"start_rss_kib"`
	// MaxRSSKiB is the largest resident set sampled during the run.
	MaxRSSKiB uint64 `json:"max_rss_kib"`
}

func writeJSON(w io.Writer, r *Result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func mib(kib uint64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }

func ms(v float64) string {
	switch {
	case v < 1:
		return fmt.Sprintf("%.0fµs", v*1000)
	case v < 100:
		return fmt.Sprintf("%.2fms", v)
	default:
		return fmt.Sprintf("%.0fms", v)
	}
}

// writeText prints r for people.
func writeText(w io.Writer, r *Result) {
	shape := fmt.Sprintf("%d topics", r.Topics)
	switch {
	case r.Topics == 1 && r.Subscribers > 1:
		shape = "1 topic (fan-out)"
	case r.Topics == 1 && r.Publishers > 1:
		shape = "1 topic (fan-in)"
	case r.Topics == 1:
		shape = "1 topic"
	}
	fmt.Fprintf(w, "hubload %s %s  qos=%d size=%dB publishers=%d subscribers=%d %s\n",
		r.Mode, r.URL, r.QoS, r.Size, r.Publishers, r.Subscribers, shape)
	cut := ""
	if r.TimedOut {
		cut = "  (cut short by --duration)"
	}
	if r.Interrupted {
		cut = "  (interrupted)"
	}
	if r.Attempted != r.Sent {
		cut += fmt.Sprintf("  (%d attempted, %d not confirmed)", r.Attempted, r.Attempted-r.Sent)
	}
	fmt.Fprintf(w, "  sent       %d of %d in %.3fs  %.0f msg/s%s\n", r.Sent, r.MessagesPlanned, r.PublishSeconds, r.SendRate, cut)
	fmt.Fprintf(w, "  received   %d of %d expected in %.3fs  %.0f msg/s\n", r.Received, r.Expected, r.ReceiveSeconds, r.ReceiveRate)
	fmt.Fprintf(w, "  lost       %d (%.2f%%)  duplicates %d  invalid %d  unexpected %d\n", r.Lost, r.LossPct, r.Duplicates, r.Invalid, r.Unexpected)
	l := r.Latency
	fmt.Fprintf(w, "  latency    p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (min %s, mean %s, n=%d)\n",
		ms(l.P50Ms), ms(l.P90Ms), ms(l.P99Ms), ms(l.P999Ms), ms(l.MaxMs), ms(l.MinMs), ms(l.MeanMs), l.Count)
	client := ""
	if r.MQTTClient != "" {
		client = ", MQTT client " + r.MQTTClient
	}
	fmt.Fprintf(w, "  cpu        hubload %.2fs in %.2fs wall (%.1fµs per delivery%s)", r.ClientCPUSeconds, r.WallSeconds, r.ClientCPUMicrosPerDelivery, client)
	if t := r.Target; t != nil {
		fmt.Fprintf(w, "  target %.2fs (%.1fµs per delivery)", t.CPUSeconds, t.CPUMicrosPerDelivery)
	}
	fmt.Fprintln(w)
	if t := r.Target; t != nil {
		fmt.Fprintf(w, "  target     pid %d  VmHWM %s  VmRSS %s  (at start %s, max sampled %s)\n",
			t.PID, mib(t.VmHWMKiB), mib(t.VmRSSKiB), mib(t.StartRSSKiB), mib(t.MaxRSSKiB))
	}
	if r.ErrorCount > 0 {
		fmt.Fprintf(w, "  errors     %d: %s\n", r.ErrorCount, strings.Join(r.Errors, "; "))
	}
}
