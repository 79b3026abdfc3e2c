package xmpp

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/hubsmith/hub/devices"
)

const testDecl = `[{"name":"set","params":{"properties":{
 "on":{"type":"boolean"},"level":{"type":"integer","default":5},"mode":{"type":"string","enum":["a","b"]},"gain":{"type":"number"}},
 "required":["on"]}}]`

func TestFormParams(t *testing.T) {
	t.Parallel()
	cs, err := devices.ParseCommands([]byte(testDecl))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		form, want, param string
	}{
		{`<field var='on'><value>1</value></field>`, `{"level":5,"on":true}`, ""},
		{`<field var='FORM_TYPE'><value>x</value></field><field var='on'><value>false</value></field><field var='gain'><value>0.5</value></field><field var='mode'><value>b</value></field><field var='level'><value></value></field>`, `{"gain":0.5,"level":5,"mode":"b","on":false}`, ""},
		{`<field var='on'><value>yes</value></field>`, "", "on"},
		{`<field var='on'><value>1</value></field><field var='level'><value>1.5</value></field>`, "", "level"},
		{`<field var='on'><value>1</value></field><field var='mode'><value>c</value></field>`, "", "mode"},
		{`<field var='on'><value>1</value></field><field var='x'><value>1</value></field>`, "", "x"},
		{`<field var='level'><value>1</value></field>`, "", "on"},
	}
	for _, tt := range tests {
		x, err := parseElement([]byte(`<x xmlns='jabber:x:data' type='submit'>` + tt.form + `</x>`))
		if err != nil {
			t.Fatal(err)
		}
		got, err := formParams(cs[0], x)
		if tt.param == "" {
			if err != nil || string(got) != tt.want {
				t.Errorf("%s: %s %v, want %s", tt.form, got, err, tt.want)
			}
			continue
		}
		var pe *devices.ParamError
		if !errors.As(err, &pe) || pe.Param != tt.param {
			t.Errorf("%s: %v, want an error naming %q", tt.form, err, tt.param)
		}
	}
	// A command without declared params takes the fields as strings.
	x, _ := parseElement([]byte(`<x xmlns='jabber:x:data' type='submit'><field var='a'><value>1</value></field></x>`))
	if got, err := formParams(devices.Command{Name: "free"}, x); err != nil || string(got) != `{"a":"1"}` {
		t.Errorf("undeclared: %s %v", got, err)
	}
}

func TestDeviceRefusal(t *testing.T) {
	t.Parallel()
	tests := []struct {
		iq     string
		status int
		reason string
	}{
		{`<iq type='error'><error type='modify'><bad-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>level out of range</text></error></iq>`, http.StatusBadRequest, "level out of range"},
		{`<iq type='error'><error type='cancel'><not-allowed xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>`, http.StatusForbidden, "not-allowed"},
		{`<iq type='error'><error type='cancel'><conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>`, http.StatusConflict, "conflict"},
		{`<iq type='error'><error type='cancel'><internal-server-error xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>crashed</text></error></iq>`, http.StatusBadGateway, "crashed"},
		{`<iq type='error'/>`, http.StatusBadGateway, ""},
		{`<iq type='result'><command xmlns='http://jabber.org/protocol/commands' status='completed'><note type='error'>door open</note></command></iq>`, http.StatusUnprocessableEntity, "door open"},
	}
	for _, tt := range tests {
		el, err := parseElement([]byte(tt.iq))
		if err != nil {
			t.Fatal(err)
		}
		_, err = commandResult(el)
		var re *devices.RefusedError
		if !errors.As(err, &re) || re.HTTPStatus() != tt.status || re.Reason != tt.reason {
			t.Errorf("%s: %v (%+v), want %d %q", tt.iq, err, re, tt.status, tt.reason)
		}
	}
}

func TestCommandForm(t *testing.T) {
	t.Parallel()
	cs, _ := devices.ParseCommands([]byte(testDecl))
	f := commandForm("lamp", cs[0]).String()
	for _, want := range []string{`type='form'`, `var='on' label='on' type='boolean'><required/>`, `type='list-single'`, `<option label='a'><value>a</value></option>`, `datatype='xs:decimal'`, `<value>5</value>`, `var='FORM_TYPE' type='hidden'`} {
		if !strings.Contains(f, want) {
			t.Errorf("form lacks %s: %s", want, f)
		}
	}
}

// A submitted form never panics and what it gives is JSON the
// declaration accepts.
func FuzzFormParams(f *testing.F) {
	cs, err := devices.ParseCommands([]byte(testDecl))
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		`<x xmlns='jabber:x:data' type='submit'><field var='on'><value>1</value></field></x>`,
		`<x xmlns='jabber:x:data'><field var='level'><value>1e3</value></field><field var='on'><value>0</value></field></x>`,
		`<x xmlns='jabber:x:data'><field><value/></field><field var='mode'/></x>`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		x, err := parseElement([]byte(s))
		if err != nil {
			return
		}
		got, err := formParams(cs[0], x)
		if err != nil {
			if !errors.Is(err, devices.ErrInvalid) {
				t.Fatalf("error %v is not ErrInvalid", err)
			}
			return
		}
		if !json.Valid(got) {
			t.Fatalf("invalid JSON %s", got)
		}
		if _, err := cs[0].CheckParams(got); err != nil {
			t.Fatalf("params %s from the form refused: %v", got, err)
		}
	})
}

func TestParamFields(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ params, want string }{
		{`{"on":true,"level":7,"mode":"warm","list":[1],"params":"x"}`, `<field var='level'><value>7</value></field><field var='mode'><value>warm</value></field><field var='on'><value>true</value></field>`},
		{`null`, ``},
		{`[1,2]`, ``},
	} {
		x := newElement(nsData, "x", "type", "submit")
		paramFields(x, json.RawMessage(tt.params))
		if got := strings.TrimSuffix(strings.TrimPrefix(x.String(), `<x xmlns='jabber:x:data' type='submit'>`), `</x>`); got != tt.want && !(tt.want == "" && strings.HasSuffix(x.String(), "/>")) {
			t.Errorf("%s: %s, want %s", tt.params, x.String(), tt.want)
		}
	}
}
