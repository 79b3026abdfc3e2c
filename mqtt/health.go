package mqtt

import "github.com/hubsmith/hub/adapters"

var _ adapters.ListenerReporter = (*Adapter)(nil)

// Listeners implements adapters.ListenerReporter: the state of the MQTT,
// MQTTS and WebSocket listeners; none before Start.
func (a *Adapter) Listeners() []adapters.ListenerStatus {
	p := a.served.Load()
	if p == nil {
		return nil
	}
	out := make([]adapters.ListenerStatus, 0, len(*p))
	for _, l := range *p {
		out = append(out, l.status())
	}
	return out
}
