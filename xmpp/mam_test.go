package xmpp

import (
	"errors"
	"testing"
	"time"
)

func TestParseMAMQuery(t *testing.T) {
	t.Parallel()
	const tjid = "home.t@topics.localhost"
	form := func(fields string) string {
		return `<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>` + fields + `</x>`
	}
	tests := []struct {
		name, inner string
		check       func(t *testing.T, start, end time.Time, after, before string, last, empty bool, max int)
		err         bool
	}{
		{name: "empty", check: func(t *testing.T, s, e time.Time, a, b string, last, empty bool, max int) {
			if !s.IsZero() || !e.IsZero() || a != "" || b != "" || last || empty || max != defaultMAMPage {
				t.Errorf("got %v %v %q %q %v %v %d", s, e, a, b, last, empty, max)
			}
		}},
		{name: "form and set", inner: form(`<field var='start'><value>2026-12-01T12:00:00Z</value></field><field var='end'><value>2026-12-01T13:00:00.5+01:00</value></field><field var='with'><value>home.t@topics.localhost/x</value></field>`) +
			`<set xmlns='http://jabber.org/protocol/rsm'><max>10000</max><after>1-a</after><before/></set>`,
			check: func(t *testing.T, s, e time.Time, a, b string, last, empty bool, max int) {
				if !s.Equal(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)) || !e.Equal(time.Date(2026, 12, 1, 12, 0, 0, 5e8, time.UTC)) ||
					a != "1-a" || b != "" || !last || empty || max != maxMAMPage {
					t.Errorf("got %v %v %q %q %v %v %d", s, e, a, b, last, empty, max)
				}
			}},
		{name: "with another JID", inner: form(`<field var='with'><value>juliet@localhost</value></field>`),
			check: func(t *testing.T, _, _ time.Time, _, _ string, _, empty bool, _ int) {
				if !empty {
					t.Error("with another JID selects messages")
				}
			}},
		{name: "before an id", inner: `<set xmlns='http://jabber.org/protocol/rsm'><before>5-x</before></set>`,
			check: func(t *testing.T, _, _ time.Time, _, b string, last, _ bool, _ int) {
				if b != "5-x" || last {
					t.Errorf("before %q last %v", b, last)
				}
			}},
		{name: "bad FORM_TYPE", inner: `<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:xmpp:mam:1</value></field></x>`, err: true},
		{name: "bad date", inner: form(`<field var='start'><value>June</value></field>`), err: true},
		{name: "unknown field", inner: form(`<field var='x'><value>1</value></field>`), err: true},
		{name: "bad max", inner: `<set xmlns='http://jabber.org/protocol/rsm'><max>-1</max></set>`, err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			el, err := parseElement([]byte(`<query xmlns='urn:xmpp:mam:2'>` + tt.inner + `</query>`))
			if err != nil {
				t.Fatal(err)
			}
			q, empty, err := parseMAMQuery(el, "home/t", tjid)
			if tt.err {
				if !errors.Is(err, errMAMQuery) {
					t.Fatalf("err = %v; want errMAMQuery", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, q.Start, q.End, q.After, q.Before, q.Last, empty, q.Max)
		})
	}
}

// FuzzParseMAMQuery: any query element parses or fails with errMAMQuery,
// and a page size stays in 0..maxMAMPage.
func FuzzParseMAMQuery(f *testing.F) {
	for _, s := range []string{
		`<query xmlns='urn:xmpp:mam:2' queryid='a'/>`,
		`<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data'><field var='start'><value>2026-12-01T12:00:00Z</value></field></x><set xmlns='http://jabber.org/protocol/rsm'><max>5</max><before/></set></query>`,
		`<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'><max>99999999999999999999</max></set></query>`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		el, err := parseElement([]byte(s))
		if err != nil {
			return
		}
		q, _, err := parseMAMQuery(el, "t", "t@topics.localhost")
		if err != nil {
			if !errors.Is(err, errMAMQuery) {
				t.Fatalf("error %v is not errMAMQuery", err)
			}
			return
		}
		if q.Max < 0 || q.Max > maxMAMPage {
			t.Fatalf("max %d", q.Max)
		}
	})
}
