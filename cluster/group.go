package cluster

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubsmith/hub/store"
)

// Grouped keys: many small store buckets of one kind (one roster per
// user) kept in one KV bucket, each store bucket a group of keys
// "g{group}.k{key}" (both base64url), so that a hub lists one group
// without reading the others and JetStream does not carry one stream per
// user.

// groupKey is the KV key of key in group.
func groupKey(group, key string) string {
	return "g" + base64.RawURLEncoding.EncodeToString([]byte(group)) + "." + kvKey(key)
}

// groupFilter is the KV key filter of every key of group.
func groupFilter(group string) string {
	return "g" + base64.RawURLEncoding.EncodeToString([]byte(group)) + ".*"
}

// keyInGroup returns the key of a grouped KV key.
func keyInGroup(k string) (string, error) {
	_, rest, ok := strings.Cut(k, ".")
	if !ok || !strings.HasPrefix(k, "g") {
		return "", fmt.Errorf("cluster: kv key %q: not a grouped key", k)
	}
	return keyOf(rest)
}

// reachable fails at once while the connection to NATS is down: a
// request would only time out, and a client of this hub (an XMPP login
// reading its roster) would wait for each.
func (k *KV) reachable(op, bucket string) error {
	if nc := k.js.Conn(); nc != nil && !nc.IsConnected() {
		return fmt.Errorf("cluster: kv %s %s: %w", op, bucket, ErrUnreachable)
	}
	return nil
}

// ErrUnreachable is the error of a grouped-key operation while this hub
// is cut off from NATS.
var ErrUnreachable = errors.New("NATS is out of reach")

// KVPutIn sets key of group in bucket.
func (k *KV) KVPutIn(ctx context.Context, bucket, group, key string, value []byte) error {
	if err := k.reachable("put", bucket); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	kv, err := k.bucket(ctx, bucket)
	if err != nil {
		return err
	}
	if _, err := kv.Put(ctx, groupKey(group, key), value); err != nil {
		return fmt.Errorf("cluster: kv put %s/%s/%q: %w", bucket, group, key, err)
	}
	return nil
}

// KVGetIn reads key of group in bucket (store.ErrNotFound).
func (k *KV) KVGetIn(ctx context.Context, bucket, group, key string) ([]byte, error) {
	if err := k.reachable("get", bucket); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	kv, err := k.bucket(ctx, bucket)
	if err != nil {
		return nil, err
	}
	e, err := kv.Get(ctx, groupKey(group, key))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("cluster: kv get %s/%s/%q: %w", bucket, group, key, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("cluster: kv get %s/%s/%q: %w", bucket, group, key, err)
	}
	v := e.Value()
	if v == nil {
		v = []byte{}
	}
	return v, nil
}

// KVDeleteIn removes key of group from bucket (no error when absent).
func (k *KV) KVDeleteIn(ctx context.Context, bucket, group, key string) error {
	if err := k.reachable("delete", bucket); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	kv, err := k.bucket(ctx, bucket)
	if err != nil {
		return err
	}
	if err := kv.Delete(ctx, groupKey(group, key)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("cluster: kv delete %s/%s/%q: %w", bucket, group, key, err)
	}
	return nil
}

// KVClaimIn removes key of group from bucket only if this call is the one
// that removes it: it reports false when the key was gone or another hub
// removed or changed it first (so that, of two hubs delivering the same
// record, one does).
func (k *KV) KVClaimIn(ctx context.Context, bucket, group, key string) (bool, error) {
	if err := k.reachable("claim", bucket); err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	kv, err := k.bucket(ctx, bucket)
	if err != nil {
		return false, err
	}
	e, err := kv.Get(ctx, groupKey(group, key))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("cluster: kv claim %s/%s/%q: %w", bucket, group, key, err)
	}
	err = kv.Delete(ctx, groupKey(group, key), jetstream.LastRevision(e.Revision()))
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("cluster: kv claim %s/%s/%q: %w", bucket, group, key, err)
	}
	return true, nil
}

// KVListIn returns the entries of group in bucket, sorted by key.
func (k *KV) KVListIn(ctx context.Context, bucket, group string) ([]store.KV, error) {
	if err := k.reachable("list", bucket); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*opTimeout)
	defer cancel()
	kv, err := k.bucket(ctx, bucket)
	if err != nil {
		return nil, err
	}
	w, err := kv.Watch(ctx, groupFilter(group), jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("cluster: kv list %s/%s: %w", bucket, group, err)
	}
	defer func() { _ = w.Stop() }()
	var out []store.KV
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok || e == nil {
				slices.SortFunc(out, func(a, b store.KV) int { return strings.Compare(a.Key, b.Key) })
				return out, nil
			}
			key, err := keyInGroup(e.Key())
			if err != nil {
				continue
			}
			v := e.Value()
			if v == nil {
				v = []byte{}
			}
			out = append(out, store.KV{Key: key, Value: v})
		case <-ctx.Done():
			return nil, fmt.Errorf("cluster: kv list %s/%s: %w", bucket, group, ctx.Err())
		}
	}
}
