package mqtt

import (
	"strings"

	"github.com/hubsmith/hub/adapters"
)

// ownClientPrefix is the prefix of the topics the hub publishes about one
// client ($hub/clients/{id}/dropped, ...), with the id escaped as in
// DroppedTopic, so it holds no '/', '+' or '#'.
func ownClientPrefix(clientID string) string {
	return strings.TrimSuffix(DroppedTopic(clientID), "dropped")
}

// ownClientTopic reports whether a client of principal p may read topic
// (or subscribe to filter) because it is under the client's own
// $hub/clients/{id}/: a user's role denies $ topics by default, but what
// the hub says about a client's own session is the client's to read.
// Anonymous clients never touch $ topics, so they are not let in.
func ownClientTopic(p adapters.Principal, clientID, topic string) bool {
	return !p.Anonymous && clientID != "" && strings.HasPrefix(topic, ownClientPrefix(clientID))
}
