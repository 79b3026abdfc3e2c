package gateway

import (
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// TestCoAPKeys: the coap: section's keys reach CoAPConfig.
func TestCoAPKeys(t *testing.T) {
	in := `coap:
  max_observations: 10
  max_observations_per_user: 20
  max_observations_total: 30
  max_upload_bytes_per_endpoint: 4096
  max_upload_bytes_total: 8192
  blockwise_timeout: 10s
  verify_loopback: true
  ack_timeout: 500ms
  max_retransmit: 2
  endpoint_idle_timeout: 20s
`
	c := Defaults()
	if err := yaml.Unmarshal([]byte(in), &c); err != nil {
		t.Fatal(err)
	}
	want := CoAPConfig{Addr: c.CoAP.Addr, DTLSAddr: c.CoAP.DTLSAddr, MaxObservations: 10, MaxObservationsPerUser: 20, MaxObservationsTotal: 30,
		MaxUploadBytesPerEndpoint: 4096, MaxUploadBytesTotal: 8192, BlockwiseTimeout: 10 * time.Second, VerifyLoopback: true,
		AckTimeout: 500 * time.Millisecond, MaxRetransmit: 2, EndpointIdleTimeout: 20 * time.Second}
	if c.CoAP != want {
		t.Fatalf("coap config %+v, want %+v", c.CoAP, want)
	}
}
