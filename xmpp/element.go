package xmpp

import (
	"bytes"
	"encoding/xml"
	"strconv"
	"strings"
)

// Namespaces the adapter speaks.
const (
	nsStream    = "http://etherx.jabber.org/streams"
	nsClient    = "jabber:client"
	nsComponent = "jabber:component:accept"
	nsTLS       = "urn:ietf:params:xml:ns:xmpp-tls"
	nsSASL      = "urn:ietf:params:xml:ns:xmpp-sasl"
	nsBind      = "urn:ietf:params:xml:ns:xmpp-bind"
	nsSession   = "urn:ietf:params:xml:ns:xmpp-session"
	nsStanzas   = "urn:ietf:params:xml:ns:xmpp-stanzas"
	nsStreams   = "urn:ietf:params:xml:ns:xmpp-streams"
	nsRoster    = "jabber:iq:roster"
	nsSM        = "urn:xmpp:sm:3"
	nsPing      = "urn:xmpp:ping"
	nsDiscoInfo = "http://jabber.org/protocol/disco#info"
	nsDiscoItem = "http://jabber.org/protocol/disco#items"
	nsPubSub    = "http://jabber.org/protocol/pubsub"
	nsPubSubEvt = "http://jabber.org/protocol/pubsub#event"
	nsCommands  = "http://jabber.org/protocol/commands"
	nsPayload   = "urn:hub:payload:0"
	nsXML       = "http://www.w3.org/XML/1998/namespace"
)

// element is a parsed XML element: a stanza or one of its children. Its
// Children are *element or string (character data), in document order.
type element struct {
	Name     xml.Name
	Attr     []xml.Attr
	Children []any
}

// newElement returns an element with the given namespace, name and
// attribute pairs (name, value, name, value, ...); empty values are left out.
func newElement(space, local string, attrs ...string) *element {
	e := &element{Name: xml.Name{Space: space, Local: local}}
	for i := 0; i+1 < len(attrs); i += 2 {
		e.SetAttr(attrs[i], attrs[i+1])
	}
	return e
}

// AttrValue returns the value of the un-namespaced attribute name.
func (e *element) AttrValue(name string) string {
	for _, a := range e.Attr {
		if a.Name.Space == "" && a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

// SetAttr sets (or, with an empty value, removes) an un-namespaced attribute.
func (e *element) SetAttr(name, value string) {
	for i, a := range e.Attr {
		if a.Name.Space == "" && a.Name.Local == name {
			if value == "" {
				e.Attr = append(e.Attr[:i], e.Attr[i+1:]...)
			} else {
				e.Attr[i].Value = value
			}
			return
		}
	}
	if value != "" {
		e.Attr = append(e.Attr, xml.Attr{Name: xml.Name{Local: name}, Value: value})
	}
}

// Child returns the first child element with the namespace and local name
// (an empty space matches any namespace).
func (e *element) Child(space, local string) *element {
	for _, c := range e.Children {
		if ce, ok := c.(*element); ok && ce.Name.Local == local && (space == "" || ce.Name.Space == space) {
			return ce
		}
	}
	return nil
}

// Elements returns the child elements.
func (e *element) Elements() []*element {
	var out []*element
	for _, c := range e.Children {
		if ce, ok := c.(*element); ok {
			out = append(out, ce)
		}
	}
	return out
}

// Text returns the element's own character data.
func (e *element) Text() string {
	var b strings.Builder
	for _, c := range e.Children {
		if s, ok := c.(string); ok {
			b.WriteString(s)
		}
	}
	return b.String()
}

// Add appends child elements and returns e.
func (e *element) Add(children ...*element) *element {
	for _, c := range children {
		e.Children = append(e.Children, c)
	}
	return e
}

// AddText appends character data and returns e.
func (e *element) AddText(s string) *element {
	e.Children = append(e.Children, s)
	return e
}

// Copy returns a deep copy of e.
func (e *element) Copy() *element {
	c := &element{Name: e.Name, Attr: append([]xml.Attr(nil), e.Attr...)}
	c.Children = make([]any, len(e.Children))
	for i, ch := range e.Children {
		if ce, ok := ch.(*element); ok {
			c.Children[i] = ce.Copy()
		} else {
			c.Children[i] = ch
		}
	}
	return c
}

// Bytes serializes e as a top-level stanza of a stream whose default
// namespace is streamNS; stanzas in jabber:client or
// jabber:component:accept take the stream's namespace.
func (e *element) Bytes(streamNS string) []byte {
	var b bytes.Buffer
	parent := e.Name.Space
	if parent == nsClient || parent == nsComponent {
		parent = streamNS
	} else {
		parent = streamNS + " " // never equal: forces an xmlns declaration
	}
	e.write(&b, parent, true)
	return b.Bytes()
}

// String serializes e with its namespace declared.
func (e *element) String() string {
	var b bytes.Buffer
	e.write(&b, "", false)
	return b.String()
}

func (e *element) write(b *bytes.Buffer, parentNS string, top bool) {
	space := e.Name.Space
	if top && (space == nsClient || space == nsComponent) {
		space = strings.TrimSuffix(parentNS, " ")
	}
	b.WriteByte('<')
	b.WriteString(e.Name.Local)
	if isContentNS(space) && isContentNS(parentNS) {
		space = parentNS
	}
	if space != parentNS {
		b.WriteString(" xmlns='")
		escapeAttr(b, space)
		b.WriteByte('\'')
	}
	prefixes := 0
	for _, a := range e.Attr {
		b.WriteByte(' ')
		switch a.Name.Space {
		case "":
		case nsXML, "xml":
			b.WriteString("xml:")
		default:
			prefixes++
			p := "ns" + strconv.Itoa(prefixes)
			b.WriteString("xmlns:" + p + "='")
			escapeAttr(b, a.Name.Space)
			b.WriteString("' " + p + ":")
		}
		b.WriteString(a.Name.Local)
		b.WriteString("='")
		escapeAttr(b, a.Value)
		b.WriteByte('\'')
	}
	if len(e.Children) == 0 {
		b.WriteString("/>")
		return
	}
	b.WriteByte('>')
	for _, c := range e.Children {
		switch c := c.(type) {
		case *element:
			c.write(b, space, false)
		case string:
			_ = xml.EscapeText(b, []byte(c))
		}
	}
	b.WriteString("</")
	b.WriteString(e.Name.Local)
	b.WriteByte('>')
}

func escapeAttr(b *bytes.Buffer, s string) {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\'':
			b.WriteString("&apos;")
		case '"':
			b.WriteString("&quot;")
		case '&':
			b.WriteString("&amp;")
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		case '\n':
			b.WriteString("&#xA;")
		case '\r':
			b.WriteString("&#xD;")
		case '\t':
			b.WriteString("&#x9;")
		default:
			b.WriteByte(c)
		}
	}
}

// isContentNS reports whether ns is a stream's content namespace, which
// stanzas and their error children share.
func isContentNS(ns string) bool { return ns == nsClient || ns == nsComponent }
