package gateway

import (
	"errors"
	"fmt"
	"testing"
)

func TestAdapterErrSaysTheNameOnce(t *testing.T) {
	base := errors.New("listen tcp 127.0.0.1:1883: bind: address already in use")
	cases := []struct {
		err  error
		want string
	}{
		{fmt.Errorf("mqtt: listen mqtt on 127.0.0.1:1883: %w", base), "start mqtt: listen mqtt on 127.0.0.1:1883: listen tcp 127.0.0.1:1883: bind: address already in use"},
		{fmt.Errorf("listen: %w", base), "start mqtt: listen: listen tcp 127.0.0.1:1883: bind: address already in use"},
		{fmt.Errorf("mqttx: %w", base), "start mqtt: mqttx: listen tcp 127.0.0.1:1883: bind: address already in use"},
	}
	for _, c := range cases {
		got := adapterErr("start", "mqtt", c.err)
		if got.Error() != c.want {
			t.Errorf("adapterErr(%q) = %q, want %q", c.err, got, c.want)
		}
		if !errors.Is(got, base) {
			t.Errorf("adapterErr(%q) does not unwrap to the adapter's error", c.err)
		}
	}
}
