package broker

import (
	"strings"
	"sync/atomic"
)

// index maps topic filters to subscriptions as a trie of levels, so a
// publish costs the depth of the topic rather than the number of
// subscriptions. It is not safe for concurrent use; Memory guards it.
type index struct {
	root *node
}

// fentry is one filter of one subscription in the index.
type fentry struct {
	s *memSub
	f Filter
}

// group is a consumer group at one filter: each match goes to one member.
type group struct {
	members []*fentry
	next    atomic.Uint32
}

// pick chooses the member a match goes to: round robin among attached
// members, else among durable ones (they queue it), else none.
func (g *group) pick() *fentry {
	n := len(g.members)
	if n == 0 {
		return nil
	}
	start := int(g.next.Add(1))
	var durable *fentry
	for i := range n {
		e := g.members[(start+i)%n]
		if e.s.isAttached() {
			return e
		}
		if durable == nil && e.s.opts.Durable {
			durable = e
		}
	}
	return durable
}

type node struct {
	children map[string]*node
	subs     map[*fentry]struct{}
	groups   map[string]*group
}

func newIndex() *index { return &index{root: &node{}} }

func (ix *index) add(e *fentry) {
	n := ix.root
	for _, l := range strings.Split(e.f.Topic, "/") {
		if n.children == nil {
			n.children = make(map[string]*node)
		}
		c := n.children[l]
		if c == nil {
			c = &node{}
			n.children[l] = c
		}
		n = c
	}
	if e.f.Group != "" {
		if n.groups == nil {
			n.groups = make(map[string]*group)
		}
		g := n.groups[e.f.Group]
		if g == nil {
			g = &group{}
			n.groups[e.f.Group] = g
		}
		// Copy on write: a concurrent pick reads members under the
		// bus's read lock, adds and removes hold its write lock.
		g.members = append(g.members[:len(g.members):len(g.members)], e)
		return
	}
	if n.subs == nil {
		n.subs = make(map[*fentry]struct{})
	}
	n.subs[e] = struct{}{}
}

func (ix *index) remove(e *fentry) {
	levels := strings.Split(e.f.Topic, "/")
	path := make([]*node, 0, len(levels)+1)
	n := ix.root
	path = append(path, n)
	for _, l := range levels {
		n = n.children[l]
		if n == nil {
			return
		}
		path = append(path, n)
	}
	if e.f.Group != "" {
		if g := n.groups[e.f.Group]; g != nil {
			ms := make([]*fentry, 0, len(g.members))
			for _, m := range g.members {
				if m != e {
					ms = append(ms, m)
				}
			}
			g.members = ms
			if len(ms) == 0 {
				delete(n.groups, e.f.Group)
			}
		}
	} else {
		delete(n.subs, e)
	}
	// Prune empty nodes bottom-up so churn does not grow the trie.
	for i := len(levels) - 1; i >= 0; i-- {
		c := path[i+1]
		if len(c.subs) > 0 || len(c.children) > 0 || len(c.groups) > 0 {
			break
		}
		delete(path[i].children, levels[i])
	}
}

// match calls fn for every filter entry matching topic, and for one member
// of every consumer group matching it; a subscription with several
// matching filters is reported once per filter.
func (ix *index) match(topic string, fn func(*fentry)) {
	dollar := strings.HasPrefix(topic, "$")
	matchNode(ix.root, topic, true, dollar, fn)
}

func (n *node) report(fn func(*fentry)) {
	for e := range n.subs {
		fn(e)
	}
	for _, g := range n.groups {
		if e := g.pick(); e != nil {
			fn(e)
		}
	}
}

func matchNode(n *node, rest string, first, dollar bool, fn func(*fentry)) {
	if n.children == nil {
		return
	}
	wild := !(first && dollar)
	if wild {
		if c := n.children["#"]; c != nil {
			c.report(fn)
		}
	}
	l, tail, more := strings.Cut(rest, "/")
	visit := func(c *node) {
		if more {
			matchNode(c, tail, false, dollar, fn)
			return
		}
		c.report(fn)
		// "a/#" matches "a".
		if h := c.children["#"]; h != nil {
			h.report(fn)
		}
	}
	if c := n.children[l]; c != nil {
		visit(c)
	}
	if wild {
		if c := n.children["+"]; c != nil {
			visit(c)
		}
	}
}
