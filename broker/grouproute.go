package broker

import "context"

// groupRoute says which filters a publish is routed to, for a clustered
// bus that chooses a group's member hub itself: every filter (the zero
// value), none with a Group, or only the group filter (group, topic).
type groupRoute struct {
	mode         byte // 0 all, 1 no groups, 2 one group
	group, topic string
}

type groupRouteKey struct{}

// WithoutGroups makes a Publish on Memory with the returned context skip
// consumer-group filters: a clustered bus that has the group's member hub
// chosen elsewhere (a NATS queue subscription) routes the rest here.
func WithoutGroups(ctx context.Context) context.Context {
	return context.WithValue(ctx, groupRouteKey{}, groupRoute{mode: 1})
}

// OnlyGroup makes a Publish on Memory with the returned context reach
// only the members of the consumer group group on filter topic (one of
// them, as always), nothing else.
func OnlyGroup(ctx context.Context, group, topic string) context.Context {
	return context.WithValue(ctx, groupRouteKey{}, groupRoute{mode: 2, group: group, topic: topic})
}

func groupRouteOf(ctx context.Context) groupRoute {
	r, _ := ctx.Value(groupRouteKey{}).(groupRoute)
	return r
}

// takes reports whether the route reaches filter f.
func (r groupRoute) takes(f Filter) bool {
	switch r.mode {
	case 1:
		return f.Group == ""
	case 2:
		return f.Group == r.group && f.Topic == r.topic
	}
	return true
}
