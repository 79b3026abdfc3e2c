package coap

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/hubsmith/hub/broker"
)

func TestPathTopic(t *testing.T) {
	t.Parallel()
	cases := []struct {
		topic, path string
	}{
		{"a", "/ps/a"},
		{"a/b/c", "/ps/a/b/c"},
		{"a/+/c", "/ps/a/+/c"},
		{"a/#", "/ps/a/%23"},
		{"a//b", "/ps/a//b"},
		{"/a", "/ps//a"},
		{"a/", "/ps/a/"},
		{"$hub/x", "/ps/$hub/x"},
		{"100%/ok?", "/ps/100%25/ok%3F"},
		{"sp ace/ü", "/ps/sp%20ace/%C3%BC"},
	}
	for _, c := range cases {
		if got := TopicToPath(c.topic); got != c.path {
			t.Errorf("TopicToPath(%q) = %q, want %q", c.topic, got, c.path)
		}
		got, err := PathToTopic(c.path)
		if err != nil || got != c.topic {
			t.Errorf("PathToTopic(%q) = %q, %v; want %q", c.path, got, err, c.topic)
		}
		segs := TopicToSegments(c.topic)
		if back, err := SegmentsToTopic(segs); err != nil || back != c.topic {
			t.Errorf("segments of %q: %q -> %q, %v", c.topic, segs, back, err)
		}
	}
	bad := []string{"", "ps/a", "/ps", "/ps/", "/x/a", "/ps/a%2Fb", "/ps/%zz", "/PS/a"}
	for _, p := range bad {
		if got, err := PathToTopic(p); !errors.Is(err, ErrBadPath) {
			t.Errorf("PathToTopic(%q) = %q, %v; want ErrBadPath", p, got, err)
		}
	}
	if _, err := SegmentsToTopic([]string{"ps", "a/b"}); !errors.Is(err, ErrBadPath) {
		t.Errorf("a segment holding '/' accepted: %v", err)
	}
	if _, err := topicFromSegments([]string{"ps", "a", "+"}, false); !errors.Is(err, ErrBadPath) || !errors.Is(err, broker.ErrWildcardTopic) {
		t.Errorf("wildcard name: %v", err)
	}
	if got, err := topicFromSegments([]string{"ps", "a", "+"}, true); err != nil || got != "a/+" {
		t.Errorf("filter: %q %v", got, err)
	}
}

func FuzzPathToTopic(f *testing.F) {
	for _, s := range []string{"/ps/a/b", "/ps/a/%23", "/ps//", "/ps/%2F", "/ps/a%zz", "/ps/ü/+"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		topic, err := PathToTopic(path)
		if err != nil {
			if !errors.Is(err, ErrBadPath) {
				t.Fatalf("error %v is not ErrBadPath", err)
			}
			return
		}
		again, err := PathToTopic(TopicToPath(topic))
		if err != nil || again != topic {
			t.Fatalf("%q -> %q -> %q -> %q, %v", path, topic, TopicToPath(topic), again, err)
		}
	})
}

func FuzzTopicToPath(f *testing.F) {
	for _, s := range []string{"a/b", "a/#", "+/x", "a//b", "/", "%", "?#[]", "ü/€"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		if broker.ValidateTopic(topic) != nil && broker.ValidateFilter(topic) != nil {
			return
		}
		p := TopicToPath(topic)
		back, err := PathToTopic(p)
		if err != nil || back != topic {
			t.Fatalf("%q -> %q -> %q, %v", topic, p, back, err)
		}
		segs := TopicToSegments(topic)
		if back, err := SegmentsToTopic(segs); err != nil || back != topic {
			t.Fatalf("segments %q -> %q, %v", segs, back, err)
		}
		if len(segs) != strings.Count(topic, "/")+2 || !slices.Contains(segs, PubSubRoot) {
			t.Fatalf("segments %q of %q", segs, topic)
		}
	})
}
