package bridge

import (
	"fmt"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// UnmarshalYAML takes a rule as an object ({filter, local_prefix,
// remote_prefix, qos}) or, as Mosquitto's bridge "topic" lines read, as a
// string "FILTER [QOS [LOCAL_PREFIX REMOTE_PREFIX]]", where "" stands for
// an empty prefix: `in: ["cmd/#", "up/# 1 cloud/ edge1/"]`.
func (r *Rule) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		rule, err := ParseRule(n.Value)
		if err != nil {
			return fmt.Errorf("line %d: %w", n.Line, err)
		}
		*r = rule
		return nil
	}
	// Node.Decode forgets the decoder's KnownFields: check the keys here.
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			switch k := n.Content[i].Value; k {
			case "filter", "local_prefix", "remote_prefix", "qos":
			default:
				return fmt.Errorf("line %d: field %s not found in type bridge.Rule", n.Content[i].Line, k)
			}
		}
	}
	type plain Rule // without this method
	var p plain
	if err := n.Decode(&p); err != nil {
		return err
	}
	*r = Rule(p)
	return nil
}

// ParseRule reads a rule written as a string: "FILTER [QOS [LOCAL_PREFIX
// REMOTE_PREFIX]]", fields separated by spaces, "" for an empty prefix.
func ParseRule(s string) (Rule, error) {
	f := strings.Fields(s)
	switch len(f) {
	case 1, 2, 4:
	default:
		return Rule{}, fmt.Errorf("bridge rule %q: want \"FILTER [QOS [LOCAL_PREFIX REMOTE_PREFIX]]\"", s)
	}
	r := Rule{Filter: f[0]}
	if len(f) >= 2 {
		q, err := strconv.ParseUint(f[1], 10, 8)
		if err != nil || q > 2 {
			return Rule{}, fmt.Errorf("bridge rule %q: qos %q: want 0, 1 or 2", s, f[1])
		}
		qos := byte(q)
		r.QoS = &qos
	}
	if len(f) == 4 {
		unq := func(p string) string {
			if p == `""` || p == `''` {
				return ""
			}
			return p
		}
		r.LocalPrefix, r.RemotePrefix = unq(f[2]), unq(f[3])
	}
	return r, nil
}
