package broker

import "strings"

// index maps topic filters to subscriptions as a trie of levels, so a
// publish costs the depth of the topic rather than the number of
// subscriptions. It is not safe for concurrent use; Memory guards it.
type index struct {
	root *node
}

type node struct {
	children map[string]*node
	subs     map[*memSub]struct{}
}

func newIndex() *index { return &index{root: &node{}} }

func (ix *index) add(filter string, s *memSub) {
	n := ix.root
	for _, l := range strings.Split(filter, "/") {
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
	if n.subs == nil {
		n.subs = make(map[*memSub]struct{})
	}
	n.subs[s] = struct{}{}
}

func (ix *index) remove(filter string, s *memSub) {
	levels := strings.Split(filter, "/")
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
	delete(n.subs, s)
	// Prune empty nodes bottom-up so churn does not grow the trie.
	for i := len(levels) - 1; i >= 0; i-- {
		c := path[i+1]
		if len(c.subs) > 0 || len(c.children) > 0 {
			break
		}
		delete(path[i].children, levels[i])
	}
}

// match calls fn for every subscription with a filter matching topic; a
// subscription with several matching filters is reported once per filter.
func (ix *index) match(topic string, fn func(*memSub)) {
	dollar := strings.HasPrefix(topic, "$")
	matchNode(ix.root, topic, true, dollar, fn)
}

func matchNode(n *node, rest string, first, dollar bool, fn func(*memSub)) {
	if n.children == nil {
		return
	}
	wild := !(first && dollar)
	if wild {
		if c := n.children["#"]; c != nil {
			for s := range c.subs {
				fn(s)
			}
		}
	}
	l, tail, more := strings.Cut(rest, "/")
	visit := func(c *node) {
		if more {
			matchNode(c, tail, false, dollar, fn)
			return
		}
		for s := range c.subs {
			fn(s)
		}
		// "a/#" matches "a".
		if h := c.children["#"]; h != nil {
			for s := range h.subs {
				fn(s)
			}
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
