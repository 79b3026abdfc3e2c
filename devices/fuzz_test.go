package devices

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/hubsmith/hub/broker"
)

// A valid id is exactly one topic level, so the command, response and
// presence topics built from it are valid topics with the id where
// expected.
func FuzzValidateID(f *testing.F) {
	for _, s := range []string{"sensor1", "a.b-c_d", "", "a/b", "+", "#", "$x", "é", strings.Repeat("z", 130), "a\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if ValidateID(id) != nil {
			return
		}
		for _, topic := range []string{CommandTopic(id, "x"), ResponseTopic(id, "r"), PresenceTopic(id)} {
			if err := broker.ValidateTopic(topic); err != nil {
				t.Fatalf("id %q gives invalid topic %q: %v", id, topic, err)
			}
			if got := strings.Split(topic, "/"); len(got) != 4 || got[1] != id && got[2] != id {
				t.Fatalf("id %q is not one level of %q", id, topic)
			}
		}
	})
}

// Params and replies always come out as valid JSON; JSON replies are kept.
func FuzzParamsAndReply(f *testing.F) {
	for _, s := range []string{"", "null", `{"a":1}`, " [1, 2] ", "plain", "\xff", `{"a":`, "1e999", `"x"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := NormalizeParams(b)
		if err == nil && !json.Valid(p) {
			t.Fatalf("params %q -> invalid JSON %q", b, p)
		}
		if err != nil && json.Valid(b) {
			t.Fatalf("valid JSON %q refused: %v", b, err)
		}
		r := ReplyJSON(b)
		if !json.Valid(r) {
			t.Fatalf("reply %q -> invalid JSON %q", b, r)
		}
		if tr := strings.TrimSpace(string(b)); tr != "" && json.Valid([]byte(tr)) && string(r) != tr {
			t.Fatalf("JSON reply %q changed to %q", tr, r)
		}
	})
}
