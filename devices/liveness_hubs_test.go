package devices

import (
	"slices"
	"testing"
)

// TestRemoteHubs: the hubs devices are online on elsewhere, each once,
// sorted; a device that left is no longer counted.
func TestRemoteHubs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		set  [][3]string // id, hub, "on"/"off"
		want []string
	}{
		{"none", nil, nil},
		{"two on one hub", [][3]string{{"d1", "b", "on"}, {"d2", "b", "on"}}, []string{"b"}},
		{"sorted", [][3]string{{"d1", "c", "on"}, {"d2", "b", "on"}}, []string{"b", "c"}},
		{"left", [][3]string{{"d1", "c", "on"}, {"d1", "", "off"}}, nil},
		{"moved", [][3]string{{"d1", "c", "on"}, {"d1", "b", "on"}}, []string{"b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, false)
			for _, s := range tc.set {
				e.reg.remote.set(s[0], s[1], s[2] == "on")
			}
			if got := e.reg.RemoteHubs(); !slices.Equal(got, tc.want) {
				t.Fatalf("RemoteHubs() = %v, want %v", got, tc.want)
			}
		})
	}
}
