package cluster

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubsmith/hub/store"
)

// KV is the store's key/value interface (KVPut, KVGet, KVDelete, KVList)
// over JetStream KV buckets, so that records a hub keeps there (MQTT
// persistent sessions) are the same on every hub of the cluster. Each
// store bucket is a KV bucket of its own.
type KV struct {
	js       jetstream.JetStream
	prefix   string
	replicas int

	mu      sync.Mutex
	buckets map[string]jetstream.KeyValue
}

// NewKV returns the KV over js; bucket names start with prefix
// ("hub_kv_mqtt_sessions").
func NewKV(js jetstream.JetStream, prefix string, replicas int) *KV {
	return &KV{js: js, prefix: prefix, replicas: max(replicas, 1), buckets: map[string]jetstream.KeyValue{}}
}

// Ensure makes the named buckets now, so that the first request that
// needs one does not wait for a new replicated bucket to elect its leader.
// A JetStream cluster that has just started may lose or refuse a request:
// each bucket is tried again, each attempt bounded, until ctx ends.
func (k *KV) Ensure(ctx context.Context, buckets ...string) error {
	for _, b := range buckets {
		wait := 100 * time.Millisecond
		for {
			actx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := k.bucket(actx, b)
			cancel()
			if err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%w (gave up: %w)", err, ctx.Err())
			case <-time.After(wait):
			}
			wait = min(2*wait, 2*time.Second)
		}
	}
	return nil
}

// bucketName maps a store bucket ("mqtt.sessions") to a KV bucket name.
func (k *KV) bucketName(bucket string) (string, error) {
	if bucket == "" {
		return "", fmt.Errorf("cluster: kv: %w: empty name", store.ErrInvalidBucket)
	}
	var b strings.Builder
	b.WriteString(k.prefix + "_kv_")
	for i := 0; i < len(bucket); i++ {
		c := bucket[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' {
			b.WriteByte(c)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String(), nil
}

func (k *KV) bucket(ctx context.Context, name string) (jetstream.KeyValue, error) {
	bn, err := k.bucketName(name)
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if kv, ok := k.buckets[bn]; ok {
		return kv, nil
	}
	kv, err := k.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bn, Storage: jetstream.FileStorage,
		Replicas: k.replicas, Description: "hub store bucket " + name})
	if err != nil {
		return nil, fmt.Errorf("cluster: kv bucket %s: %w", name, err)
	}
	k.buckets[bn] = kv
	return kv, nil
}

// kvKey encodes a key, which may hold any byte, in the letters KV keys
// allow.
func kvKey(key string) string { return "k" + base64.RawURLEncoding.EncodeToString([]byte(key)) }

func keyOf(k string) (string, error) {
	rest, ok := strings.CutPrefix(k, "k")
	if !ok {
		return "", fmt.Errorf("cluster: kv key %q: not one of ours", k)
	}
	b, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil {
		return "", fmt.Errorf("cluster: kv key %q: %w", k, err)
	}
	return string(b), nil
}

// opTimeout bounds one operation: a healthy cluster answers in
// milliseconds, and one that lost its quorum does not answer at all, so
// a client of this hub (an MQTT connect looking up its session record)
// is not held longer than this.
const opTimeout = 1500 * time.Millisecond

// KVPut sets key in bucket.
func (k *KV) KVPut(ctx context.Context, bucket, key string, value []byte) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	kv, err := k.bucket(ctx, bucket)
	if err != nil {
		return err
	}
	if _, err := kv.Put(ctx, kvKey(key), value); err != nil {
		return fmt.Errorf("cluster: kv put %s/%q: %w", bucket, key, err)
	}
	return nil
}

// KVGet reads key in bucket (store.ErrNotFound).
func (k *KV) KVGet(ctx context.Context, bucket, key string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	kv, err := k.bucket(ctx, bucket)
	if err != nil {
		return nil, err
	}
	e, err := kv.Get(ctx, kvKey(key))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("cluster: kv get %s/%q: %w", bucket, key, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("cluster: kv get %s/%q: %w", bucket, key, err)
	}
	v := e.Value()
	if v == nil {
		v = []byte{}
	}
	return v, nil
}

// KVDelete removes key from bucket (no error when absent).
func (k *KV) KVDelete(ctx context.Context, bucket, key string) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	kv, err := k.bucket(ctx, bucket)
	if err != nil {
		return err
	}
	if err := kv.Delete(ctx, kvKey(key)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("cluster: kv delete %s/%q: %w", bucket, key, err)
	}
	return nil
}

// KVList returns a bucket's entries sorted by key.
func (k *KV) KVList(ctx context.Context, bucket string) ([]store.KV, error) {
	kv, err := k.bucket(ctx, bucket)
	if err != nil {
		return nil, err
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("cluster: kv list %s: %w", bucket, err)
	}
	var out []store.KV
	for name := range lister.Keys() {
		key, err := keyOf(name)
		if err != nil {
			continue
		}
		e, err := kv.Get(ctx, name)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("cluster: kv list %s: %w", bucket, err)
		}
		v := e.Value()
		if v == nil {
			v = []byte{}
		}
		out = append(out, store.KV{Key: key, Value: v})
	}
	slices.SortFunc(out, func(a, b store.KV) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}
