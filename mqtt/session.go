package mqtt

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/hubsmith/hub/store"
)

// SessionStore is the key/value storage that keeps persistent MQTT
// sessions (clean session false, or an MQTT 5 session expiry) across
// restarts: the client, its subscriptions and its queued QoS 1/2 messages.
// *store.Store implements it.
type SessionStore interface {
	KVPut(ctx context.Context, bucket, key string, value []byte) error
	KVGet(ctx context.Context, bucket, key string) ([]byte, error)
	KVDelete(ctx context.Context, bucket, key string) error
	KVList(ctx context.Context, bucket string) ([]store.KV, error)
}

var _ SessionStore = (*store.Store)(nil)

// Buckets of the session store.
const (
	bucketClients  = "mqtt.clients"
	bucketSubs     = "mqtt.subscriptions"
	bucketInflight = "mqtt.inflight"
)

// storeTimeout bounds one session-store operation.
const storeTimeout = 5 * time.Second

// clientRecord is a stored persistent session: mochi's own record plus
// the principal's role, so that ACL checks for a client that is offline
// after a restart (messages queued for it) still know who it is.
type clientRecord struct {
	storage.Client
	Role string `json:"role,omitempty"`
}

// inflightRecord is a stored in-flight or queued message; mochi's record
// lacks the absolute expiry, which is kept beside it.
type inflightRecord struct {
	storage.Message
	Expiry int64 `json:"expiry,omitempty"`
	Seq    int64 `json:"seq,omitempty"` // queueing order (see queueOrder)
}

// sessions writes the state of persistent sessions to a SessionStore.
// Clean sessions are never written: they end with their connection, so
// storing them would only cost disk writes. An index of what is stored
// avoids listing buckets on the hot path.
type sessions struct {
	kv     SessionStore
	log    *slog.Logger
	errs   atomic.Uint64
	behind *inflightWriter

	mu       sync.Mutex
	clients  map[string]bool
	subs     map[string]bool
	inflight map[string]map[uint16]bool
}

func newSessions(kv SessionStore, log *slog.Logger) *sessions {
	s := &sessions{
		kv:       kv,
		log:      log,
		clients:  make(map[string]bool),
		subs:     make(map[string]bool),
		inflight: make(map[string]map[uint16]bool),
	}
	s.behind = newInflightWriter(s)
	return s
}

// persistent reports whether cl's session outlives its connection.
func persistent(cl *mochi.Client) bool {
	if cl.Net.Inline {
		return false
	}
	if cl.Properties.ProtocolVersion == 5 {
		return cl.Properties.Props.SessionExpiryInterval > 0
	}
	return !cl.Properties.Clean
}

func inflightKey(clientID string, id uint16) string {
	return clientID + "/" + strconv.FormatUint(uint64(id)+100000, 10)[1:]
}

func (s *sessions) fail(op, key string, err error) {
	s.errs.Add(1)
	s.log.Error("mqtt: session store", "op", op, "key", key, "err", err)
}

// put stores v and reports a failure (also logged and counted), so that a
// caller whose acknowledgement depends on the write can refuse.
func (s *sessions) put(bucket, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		s.fail("encode "+bucket, key, err)
		return fmt.Errorf("mqtt: encode %s %q: %w", bucket, key, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	if err := s.kv.KVPut(ctx, bucket, key, b); err != nil {
		s.fail("put "+bucket, key, err)
		return fmt.Errorf("mqtt: store %s %q: %w", bucket, key, err)
	}
	return nil
}

func (s *sessions) del(bucket, key string) {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	if err := s.kv.KVDelete(ctx, bucket, key); err != nil {
		s.fail("delete "+bucket, key, err)
	}
}

func (s *sessions) list(bucket string) ([]store.KV, error) {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	kvs, err := s.kv.KVList(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("mqtt: list %s: %w", bucket, err)
	}
	return kvs, nil
}

// saveClient stores cl's session record.
func (s *sessions) saveClient(cl *mochi.Client, role string) {
	props := cl.Properties.Props.Copy(false)
	rec := clientRecord{
		Client: storage.Client{
			ID:              cl.ID,
			T:               storage.ClientKey,
			Remote:          cl.Net.Remote,
			Listener:        cl.Net.Listener,
			Username:        cl.Properties.Username,
			Clean:           cl.Properties.Clean,
			ProtocolVersion: cl.Properties.ProtocolVersion,
			Properties: storage.ClientProperties{
				SessionExpiryInterval:     props.SessionExpiryInterval,
				SessionExpiryIntervalFlag: props.SessionExpiryIntervalFlag,
				AuthenticationMethod:      props.AuthenticationMethod,
				AuthenticationData:        props.AuthenticationData,
				RequestProblemInfo:        props.RequestProblemInfo,
				RequestProblemInfoFlag:    props.RequestProblemInfoFlag,
				RequestResponseInfo:       props.RequestResponseInfo,
				ReceiveMaximum:            props.ReceiveMaximum,
				TopicAliasMaximum:         props.TopicAliasMaximum,
				User:                      props.User,
				MaximumPacketSize:         props.MaximumPacketSize,
			},
			Will: storage.ClientWill{
				Payload:           cl.Properties.Will.Payload,
				User:              cl.Properties.Will.User,
				TopicName:         cl.Properties.Will.TopicName,
				Flag:              atomic.LoadUint32(&cl.Properties.Will.Flag),
				WillDelayInterval: cl.Properties.Will.WillDelayInterval,
				Qos:               cl.Properties.Will.Qos,
				Retain:            cl.Properties.Will.Retain,
			},
		},
		Role: role,
	}
	_ = s.put(bucketClients, cl.ID, rec) // logged; the next change writes it again
	s.mu.Lock()
	s.clients[cl.ID] = true
	s.mu.Unlock()
}

// saveSubscriptions stores cl's current subscriptions as one record.
func (s *sessions) saveSubscriptions(cl *mochi.Client) {
	all := cl.State.Subscriptions.GetAll()
	if len(all) == 0 {
		s.deleteSubscriptions(cl.ID)
		return
	}
	recs := make([]storage.Subscription, 0, len(all))
	for _, sub := range all {
		recs = append(recs, storage.Subscription{
			T:                 storage.SubscriptionKey,
			Client:            cl.ID,
			Filter:            sub.Filter,
			Identifier:        sub.Identifier,
			RetainHandling:    sub.RetainHandling,
			Qos:               sub.Qos,
			RetainAsPublished: sub.RetainAsPublished,
			NoLocal:           sub.NoLocal,
		})
	}
	_ = s.put(bucketSubs, cl.ID, recs) // logged; the next change writes it again
	s.mu.Lock()
	s.subs[cl.ID] = true
	s.mu.Unlock()
}

func (s *sessions) deleteSubscriptions(id string) {
	s.mu.Lock()
	had := s.subs[id]
	delete(s.subs, id)
	s.mu.Unlock()
	if had {
		s.del(bucketSubs, id)
	}
}

// saveInflight stores a message in flight to or from cl (or queued for it
// while it is offline): now, or, when later is set (a connected client),
// behind (see inflightWriter). On failure nothing is recorded as stored.
func (s *sessions) saveInflight(cl *mochi.Client, pk packets.Packet, seq int64, later bool) error {
	props := pk.Properties.Copy(false)
	rec := inflightRecord{
		Message: storage.Message{
			T:           storage.InflightKey,
			Client:      cl.ID,
			Origin:      pk.Origin,
			FixedHeader: pk.FixedHeader,
			TopicName:   pk.TopicName,
			Payload:     pk.Payload,
			Created:     pk.Created,
			PacketID:    pk.PacketID,
			Properties: storage.MessageProperties{
				PayloadFormat:          props.PayloadFormat,
				PayloadFormatFlag:      props.PayloadFormatFlag,
				MessageExpiryInterval:  props.MessageExpiryInterval,
				ContentType:            props.ContentType,
				ResponseTopic:          props.ResponseTopic,
				CorrelationData:        props.CorrelationData,
				SubscriptionIdentifier: props.SubscriptionIdentifier,
				User:                   props.User,
			},
		},
		Expiry: pk.Expiry,
		Seq:    seq,
	}
	key := inflightKey(cl.ID, pk.PacketID)
	if later {
		b, err := json.Marshal(rec)
		if err != nil {
			s.fail("encode "+bucketInflight, key, err)
			return fmt.Errorf("mqtt: encode %s %q: %w", bucketInflight, key, err)
		}
		s.behind.putLater(key, b)
	} else if err := s.behind.now(key, true, func() error { return s.put(bucketInflight, key, rec) }); err != nil {
		return err
	}
	s.mu.Lock()
	m := s.inflight[cl.ID]
	if m == nil {
		m = make(map[uint16]bool)
		s.inflight[cl.ID] = m
	}
	m[pk.PacketID] = true
	s.mu.Unlock()
	return nil
}

// deleteInflight forgets a completed or dropped message.
func (s *sessions) deleteInflight(id string, packetID uint16) {
	s.mu.Lock()
	m := s.inflight[id]
	had := m[packetID]
	delete(m, packetID)
	if m != nil && len(m) == 0 {
		delete(s.inflight, id)
	}
	s.mu.Unlock()
	if had {
		s.behind.deleteLater(inflightKey(id, packetID))
	}
}

// purge forgets everything stored about a session.
func (s *sessions) purge(id string) {
	s.mu.Lock()
	hadClient := s.clients[id]
	delete(s.clients, id)
	var ids []uint16
	for pid := range s.inflight[id] {
		ids = append(ids, pid)
	}
	delete(s.inflight, id)
	s.mu.Unlock()
	if hadClient {
		s.del(bucketClients, id)
	}
	s.deleteSubscriptions(id)
	for _, pid := range ids {
		key := inflightKey(id, pid)
		_ = s.behind.now(key, false, func() error { s.del(bucketInflight, key); return nil })
	}
}

// loadClients returns the stored sessions and their roles by username.
func (s *sessions) loadClients() ([]storage.Client, map[string]string, error) {
	kvs, err := s.list(bucketClients)
	if err != nil {
		return nil, nil, err
	}
	out := make([]storage.Client, 0, len(kvs))
	roles := make(map[string]string)
	for _, kv := range kvs {
		rec, err := decodeClient(kv.Value)
		if err != nil {
			s.fail("decode "+bucketClients, kv.Key, err)
			continue
		}
		out = append(out, rec.Client)
		if len(rec.Username) > 0 && rec.Role != "" {
			roles[string(rec.Username)] = rec.Role
		}
		s.mu.Lock()
		s.clients[rec.ID] = true
		s.mu.Unlock()
	}
	return out, roles, nil
}

// loadSubscriptions returns the stored subscriptions.
func (s *sessions) loadSubscriptions() ([]storage.Subscription, error) {
	kvs, err := s.list(bucketSubs)
	if err != nil {
		return nil, err
	}
	var out []storage.Subscription
	for _, kv := range kvs {
		recs, err := decodeSubscriptions(kv.Key, kv.Value)
		if err != nil {
			s.fail("decode "+bucketSubs, kv.Key, err)
			continue
		}
		out = append(out, recs...)
		s.mu.Lock()
		s.subs[kv.Key] = true
		s.mu.Unlock()
	}
	return out, nil
}

// loadInflight returns the stored in-flight messages.
func (s *sessions) loadInflight() ([]inflightRecord, error) {
	kvs, err := s.list(bucketInflight)
	if err != nil {
		return nil, err
	}
	out := make([]inflightRecord, 0, len(kvs))
	for _, kv := range kvs {
		rec, err := decodeInflight(kv.Value)
		if err != nil {
			s.fail("decode "+bucketInflight, kv.Key, err)
			continue
		}
		out = append(out, rec)
		s.behind.loaded(kv.Key)
		s.mu.Lock()
		m := s.inflight[rec.Client]
		if m == nil {
			m = make(map[uint16]bool)
			s.inflight[rec.Client] = m
		}
		m[rec.PacketID] = true
		s.mu.Unlock()
	}
	return out, nil
}

// splitInflightKey is the inverse of inflightKey.
func splitInflightKey(key string) (clientID string, packetID uint16, ok bool) {
	i := len(key) - 6
	if i < 0 || key[i] != '/' {
		return "", 0, false
	}
	n, err := strconv.ParseUint(key[i+1:], 10, 16)
	if err != nil {
		return "", 0, false
	}
	return key[:i], uint16(n), true
}

// decodeClient decodes a stored session record; a record a later version
// of mochi or a damaged disk left unreadable is an error, never a panic.
func decodeClient(b []byte) (clientRecord, error) {
	var rec clientRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, fmt.Errorf("mqtt: session record: %w", err)
	}
	if rec.ID == "" || rec.ID == mochi.InlineClientId {
		return rec, fmt.Errorf("mqtt: session record: bad client id %q", rec.ID)
	}
	if rec.ProtocolVersion < 3 || rec.ProtocolVersion > 5 {
		return rec, fmt.Errorf("mqtt: session record %q: protocol version %d", rec.ID, rec.ProtocolVersion)
	}
	return rec, nil
}

// decodeSubscriptions decodes a stored subscription list of client id.
func decodeSubscriptions(id string, b []byte) ([]storage.Subscription, error) {
	var recs []storage.Subscription
	if err := json.Unmarshal(b, &recs); err != nil {
		return nil, fmt.Errorf("mqtt: subscriptions of %q: %w", id, err)
	}
	out := recs[:0]
	for _, r := range recs {
		if r.Client != id || !mochi.IsValidFilter(r.Filter, false) || r.Qos > 2 {
			return nil, fmt.Errorf("mqtt: subscriptions of %q: bad entry %+v", id, r)
		}
		out = append(out, r)
	}
	return out, nil
}

// decodeInflight decodes a stored in-flight message.
func decodeInflight(b []byte) (inflightRecord, error) {
	var rec inflightRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, fmt.Errorf("mqtt: in-flight record: %w", err)
	}
	if rec.Client == "" || rec.FixedHeader.Qos > 2 {
		return rec, fmt.Errorf("mqtt: in-flight record for %q: qos %d", rec.Client, rec.FixedHeader.Qos)
	}
	return rec, nil
}
