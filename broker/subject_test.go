package broker

import (
	"errors"
	"slices"
	"testing"
)

func TestTopicSubjectRoundTrip(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ topic, subject string }{
		{"a/b/c", "hub.t.a.b.c"},
		{"sensors/room1/temp", "hub.t.sensors.room1.temp"},
		{"a.b/c d", "hub.t.a~2Eb.c~20d"},
		{"$SYS/broker", "hub.t.~24SYS.broker"},
		{"a//b", "hub.t.a.~.b"},
		{"/a", "hub.t.~.a"},
		{"a/", "hub.t.a.~"},
		{"~/x*>", "hub.t.~7E.x~2A~3E"},
		{"räum", "hub.t.r~C3~A4um"},
	} {
		got, err := TopicToSubject("hub.t", tc.topic)
		if err != nil || got != tc.subject {
			t.Errorf("TopicToSubject(%q) = %q, %v; want %q", tc.topic, got, err, tc.subject)
			continue
		}
		back, err := SubjectToTopic("hub.t", got)
		if err != nil || back != tc.topic {
			t.Errorf("SubjectToTopic(%q) = %q, %v; want %q", got, back, err, tc.topic)
		}
	}
}

func TestSubjectToTopicRefuses(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"other.a", "hub.t.a..b", "hub.t.a~2", "hub.t.a~2e", "hub.t.~41", "hub.t.a b", "hub.t.*", "hub.t.a~ZZ"} {
		if got, err := SubjectToTopic("hub.t", s); !errors.Is(err, ErrInvalidSubject) {
			t.Errorf("SubjectToTopic(%q) = %q, %v; want ErrInvalidSubject", s, got, err)
		}
	}
}

func TestFilterToSubjects(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		filter string
		want   []string
	}{
		{"#", []string{"hub.t.>"}},
		{"a/#", []string{"hub.t.a", "hub.t.a.>"}},
		{"a/+/c", []string{"hub.t.a.*.c"}},
		{"+/x.y/#", []string{"hub.t.*.x~2Ey", "hub.t.*.x~2Ey.>"}},
		{"a/b", []string{"hub.t.a.b"}},
	} {
		got, err := FilterToSubjects("hub.t", tc.filter)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("FilterToSubjects(%q) = %q, %v; want %q", tc.filter, got, err, tc.want)
		}
	}
	if _, err := FilterToSubjects("hub.t", "a/#/b"); err == nil {
		t.Error("a bad filter was mapped")
	}
}

func FuzzTopicSubject(f *testing.F) {
	for _, s := range []string{"a/b", "$SYS/x", "a//b", "~", "räum/温度", "a.b c*>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		subj, err := TopicToSubject("hub.t", topic)
		if err != nil {
			if ValidateTopic(topic) == nil {
				t.Fatalf("valid topic %q refused: %v", topic, err)
			}
			return
		}
		for i := 0; i < len(subj); i++ {
			if c := subj[i]; c == ' ' || c == '*' || c == '>' || c == '$' {
				t.Fatalf("subject %q of %q holds %q", subj, topic, c)
			}
		}
		back, err := SubjectToTopic("hub.t", subj)
		if err != nil || back != topic {
			t.Fatalf("round trip of %q: %q, %v", topic, back, err)
		}
	})
}

func FuzzSubjectToTopic(f *testing.F) {
	for _, s := range []string{"hub.t.a.b", "hub.t.~", "hub.t.~24", "hub.t.a~2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, subject string) {
		topic, err := SubjectToTopic("hub.t", subject)
		if err != nil {
			return
		}
		again, err := TopicToSubject("hub.t", topic)
		if err != nil || again != subject {
			t.Fatalf("subject %q -> %q -> %q, %v: not one spelling", subject, topic, again, err)
		}
	})
}
