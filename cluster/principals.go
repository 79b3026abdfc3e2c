package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubsmith/hub/store"
)

// PrincipalsBucket is the KV bucket (after the prefix and "_") the hubs
// of a cluster share their users, devices, ACL rules and tokens in.
const PrincipalsBucket = "principals"

// principalState is the store bucket where a hub remembers, per record,
// the value (by hash) and KV revision it last agreed on with the
// cluster; a record whose local value no longer matches was changed
// here, one whose KV revision is newer was changed elsewhere.
const principalState = "hub.replica.principals"

// defaultRescan is how often the store is read again for changes made
// by another process (hub user add while the hub runs).
const defaultRescan = 2 * time.Second

// PrincipalsConfig configures a principal replicator.
type PrincipalsConfig struct {
	// JS is the JetStream context the bucket lives in (required).
	JS jetstream.JetStream
	// Prefix starts the bucket's name ("hub": hub_principals).
	Prefix string
	// Replicas is how many copies JetStream keeps of the bucket.
	Replicas int
	// Store is this hub's store, the local copy (required).
	Store *store.Store
	// Applied is called after a change made on another hub was written
	// to Store: principal is the user or device name concerned, removed
	// says it was deleted (its sessions are to be revoked).
	Applied func(ctx context.Context, principal string, removed bool)
	// Rescan is how often Store is read for changes made outside this
	// process (0: 2 s); changes made through Store are seen at once.
	Rescan time.Duration
	// Logger (nil: slog.Default()).
	Logger *slog.Logger
}

// Principals keeps a hub's users, devices, ACL rules and tokens in step
// with the other hubs of a cluster. Each hub keeps its SQLite store as
// its local copy, and every principal change is published as a record
// (store.PrincipalRecords: SCRAM credentials, never passwords; tokens by
// their hash) into the JetStream KV bucket hub_principals, which every
// hub watches and applies to its store. The KV revision orders changes:
// the last writer wins. At start a hub pushes what changed in its store
// while it was away (the CLI writes the store of a stopped hub) and
// applies what changed in the bucket; a hub that joins for the first
// time takes the cluster's version of a record both hold.
type Principals struct {
	cfg  PrincipalsConfig
	log  *slog.Logger
	kv   jetstream.KeyValue
	kick chan struct{}

	cancel context.CancelFunc
	done   chan struct{}

	// retry holds KV entries that could not be applied yet (a token
	// whose user has not arrived), tried again at each pass.
	retry map[string]jetstream.KeyValueEntry
	once  sync.Once
}

// StartPrincipals makes the bucket, brings the store and the bucket in
// step (pushing local changes, applying remote ones) and then follows
// both until Stop. It returns once the first pass is done, so that a hub
// starting its listeners after it accepts every principal the cluster
// knows.
func StartPrincipals(ctx context.Context, cfg PrincipalsConfig) (*Principals, error) {
	if cfg.JS == nil || cfg.Store == nil {
		return nil, errors.New("cluster: principals: JS and Store are required")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "hub"
	}
	if cfg.Rescan <= 0 {
		cfg.Rescan = defaultRescan
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	p := &Principals{cfg: cfg, log: cfg.Logger, kick: make(chan struct{}, 1), done: make(chan struct{}),
		retry: map[string]jetstream.KeyValueEntry{}}
	bucket := cfg.Prefix + "_" + PrincipalsBucket
	var err error
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		p.kv, err = cfg.JS.CreateOrUpdateKeyValue(actx, jetstream.KeyValueConfig{Bucket: bucket, History: 1,
			Storage: jetstream.FileStorage, Replicas: max(cfg.Replicas, 1), Description: "hub users, devices, ACL rules and tokens"})
		cancel()
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("cluster: principals: bucket %s: %w", bucket, err)
		case <-time.After(wait):
		}
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p.cancel = cancel
	w, initial, err := p.watch(ctx, runCtx)
	if err != nil {
		cancel()
		return nil, err
	}
	// A hub that never agreed on anything with the cluster joins it: the
	// cluster's version of a record wins over its own.
	stored, err := cfg.Store.KVList(ctx, principalState)
	if err != nil {
		_ = w.Stop()
		cancel()
		return nil, fmt.Errorf("cluster: principals: state: %w", err)
	}
	joining := len(stored) == 0 && len(initial) > 0
	// A bucket just made may not take writes until its leader is
	// elected: the first pass is tried again until ctx ends.
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		err := p.pass(ctx, initial, joining)
		if err == nil {
			break
		}
		p.log.Debug("cluster: principals: first pass, trying again", "err", err)
		select {
		case <-ctx.Done():
			_ = w.Stop()
			cancel()
			return nil, fmt.Errorf("%w (gave up: %w)", err, ctx.Err())
		case <-time.After(wait):
		}
	}
	cfg.Store.SetPrincipalHook(p.changed)
	go p.run(runCtx, w)
	return p, nil
}

// watch starts a watcher of the whole bucket (its lifetime runCtx) and
// reads its initial values, the bucket as it is now.
func (p *Principals) watch(ctx, runCtx context.Context) (jetstream.KeyWatcher, map[string]jetstream.KeyValueEntry, error) {
	w, err := p.kv.WatchAll(runCtx)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster: principals: watch: %w", err)
	}
	initial := map[string]jetstream.KeyValueEntry{}
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, nil, errors.New("cluster: principals: watch ended before its initial values")
			}
			if e == nil {
				return w, initial, nil
			}
			initial[e.Key()] = e
		case <-ctx.Done():
			_ = w.Stop()
			return nil, nil, fmt.Errorf("cluster: principals: initial values: %w", ctx.Err())
		}
	}
}

// changed is the store's principal hook: a pass will look at the store.
func (p *Principals) changed() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Stop ends the replicator and waits until it has.
func (p *Principals) Stop() {
	p.once.Do(func() {
		p.cfg.Store.SetPrincipalHook(nil)
		p.cancel()
		<-p.done
	})
}

func (p *Principals) run(ctx context.Context, w jetstream.KeyWatcher) {
	defer close(p.done)
	defer func() { _ = w.Stop() }()
	tick := time.NewTicker(p.cfg.Rescan)
	defer tick.Stop()
	for {
		batch := map[string]jetstream.KeyValueEntry{}
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				// The watcher ended (the connection closed): start again.
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Second):
				}
				nw, initial, err := p.watch(ctx, ctx)
				if err != nil {
					p.log.Warn("cluster: principals: watch again", "err", err)
					continue
				}
				w = nw
				batch = initial
			} else if e != nil {
				batch[e.Key()] = e
			}
		drain:
			for {
				select {
				case e, ok := <-w.Updates():
					if !ok || e == nil {
						break drain
					}
					batch[e.Key()] = e
				default:
					break drain
				}
			}
		case <-p.kick:
		case <-tick.C:
		}
		if err := p.pass(ctx, batch, false); err != nil && ctx.Err() == nil {
			p.log.Warn("cluster: principals", "err", err)
		}
	}
}

// syncState is what a hub last agreed on with the bucket for one record:
// the hash of its value ("" : absent) and the KV revision.
type syncState struct {
	Hash string `json:"h"`
	Rev  uint64 `json:"r"`
}

func hashOf(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// kindOrder applies users before the tokens that need them.
func kindOrder(key string) int {
	kind, _, _ := strings.Cut(key, "/")
	return map[string]int{store.RecordUser: 0, store.RecordDevice: 1, store.RecordACL: 2, store.RecordToken: 3}[kind]
}

// pass compares the store, the remembered state and the KV entries in
// remote (the whole bucket at start, else what changed), and pushes or
// applies each record that differs; joining (a hub's first pass ever)
// takes the bucket's version of a record both hold.
func (p *Principals) pass(ctx context.Context, remote map[string]jetstream.KeyValueEntry, joining bool) error {
	st := p.cfg.Store
	local, err := st.PrincipalRecords(ctx)
	if err != nil {
		return err
	}
	stored, err := st.KVList(ctx, principalState)
	if err != nil {
		return fmt.Errorf("cluster: principals: state: %w", err)
	}
	state := make(map[string]syncState, len(stored))
	for _, kv := range stored {
		var s syncState
		if json.Unmarshal(kv.Value, &s) == nil {
			state[kv.Key] = s
		}
	}
	byKey := map[string]jetstream.KeyValueEntry{}
	for k, e := range p.retry {
		byKey[k] = e
	}
	for kk, e := range remote {
		k, err := keyOf(kk)
		if err != nil {
			continue
		}
		if _, _, err := store.SplitRecordKey(k); err != nil {
			p.log.Debug("cluster: principals: record skipped", "key", k, "err", err)
			continue
		}
		byKey[k] = e
	}
	keys := map[string]bool{}
	for k := range local {
		keys[k] = true
	}
	for k := range state {
		keys[k] = true
	}
	for k := range byKey {
		keys[k] = true
	}
	ordered := make([]string, 0, len(keys))
	for k := range keys {
		ordered = append(ordered, k)
	}
	slices.SortFunc(ordered, func(a, b string) int {
		if d := kindOrder(a) - kindOrder(b); d != 0 {
			return d
		}
		return strings.Compare(a, b)
	})
	var errs []error
	for _, k := range ordered {
		l, lok := local[k]
		s := state[k]
		lh := ""
		if lok {
			lh = hashOf(l)
		}
		e, rok := byKey[k]
		remoteChanged := rok && e.Revision() > s.Rev
		localChanged := lh != s.Hash
		if joining && rok {
			localChanged = false
		}
		var next syncState
		switch {
		case localChanged:
			next, err = p.push(ctx, k, l, lok, s)
		case remoteChanged:
			next, err = p.apply(ctx, k, e)
			if err != nil {
				p.retry[k] = e
			} else {
				delete(p.retry, k)
			}
		default:
			delete(p.retry, k)
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if next == s {
			continue
		}
		b, _ := json.Marshal(next)
		if err := st.KVPut(ctx, principalState, k, b); err != nil {
			errs = append(errs, fmt.Errorf("cluster: principals: state of %s: %w", k, err))
		}
	}
	return errors.Join(errs...)
}

// push writes a local change into the bucket.
func (p *Principals) push(ctx context.Context, key string, value []byte, present bool, s syncState) (syncState, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if !present {
		if err := p.kv.Delete(ctx, kvKey(key)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return s, fmt.Errorf("cluster: principals: push removal of %s: %w", key, err)
		}
		p.log.Debug("cluster: principals: removal pushed", "key", key)
		return syncState{Rev: s.Rev}, nil
	}
	rev, err := p.kv.Put(ctx, kvKey(key), value)
	if err != nil {
		return s, fmt.Errorf("cluster: principals: push %s: %w", key, err)
	}
	p.log.Debug("cluster: principals: change pushed", "key", key, "rev", rev)
	return syncState{Hash: hashOf(value), Rev: rev}, nil
}

// apply writes a change of another hub into the store.
func (p *Principals) apply(ctx context.Context, key string, e jetstream.KeyValueEntry) (syncState, error) {
	_, name, _ := store.SplitRecordKey(key)
	if e.Operation() == jetstream.KeyValuePut {
		if err := p.cfg.Store.ApplyPrincipal(ctx, key, e.Value()); err != nil {
			return syncState{}, fmt.Errorf("cluster: principals: %w", err)
		}
		p.log.Debug("cluster: principals: change applied", "key", key, "rev", e.Revision())
		if p.cfg.Applied != nil && !strings.HasPrefix(key, store.RecordToken+"/") {
			p.cfg.Applied(ctx, name, false)
		}
		return syncState{Hash: hashOf(e.Value()), Rev: e.Revision()}, nil
	}
	revoke, err := p.cfg.Store.RemovePrincipal(ctx, key)
	if err != nil {
		return syncState{}, fmt.Errorf("cluster: principals: %w", err)
	}
	p.log.Debug("cluster: principals: removal applied", "key", key, "rev", e.Revision())
	if p.cfg.Applied != nil && revoke != "" {
		p.cfg.Applied(ctx, revoke, true)
	}
	return syncState{Rev: e.Revision()}, nil
}
