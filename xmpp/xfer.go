package xmpp

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hubsmith/hub/files"
)

// Files sent to the hub itself over a bytestream (XEP-0096 SI, then
// XEP-0047 IBB or XEP-0065 SOCKS5 through the hub's proxy). The store's
// upload begins when the SI offer comes, so that its up-front refusals
// (name, size, quota) answer the offer; each block of the stream is
// written to it as it arrives, and the end of the stream commits it. A
// stream that ends early, idles, carries too much or whose sender goes
// away aborts the upload: nothing becomes visible.

// Bounds of incoming transfers.
const (
	// maxTransfersPerPrincipal bounds the transfers a principal has open.
	maxTransfersPerPrincipal = 4
	// maxTransfers bounds the transfers open at a time.
	maxTransfers = 64
	// transferIdleTimeout ends a transfer whose stream brought nothing
	// for so long (and an accepted offer whose stream never opened).
	transferIdleTimeout = 30 * time.Second
	// maxIBBBlock is the largest IBB block-size accepted: its base64 fits
	// in a stanza of DefaultMaxStanza.
	maxIBBBlock = 65535
	// commitTimeout bounds storing a complete file.
	commitTimeout = 30 * time.Second
)

// Errors that end a transfer.
var (
	errInterrupted = errors.New("xmpp: transfer interrupted: the sender went away")
	errIdle        = errors.New("xmpp: transfer idle too long")
	errShort       = errors.New("xmpp: the stream ended before the declared size")
	errLong        = errors.New("xmpp: the stream carried more than the declared size")
	errTooMany     = errors.New("xmpp: too many transfers open")
)

// inbound is a file coming to the hub over a bytestream.
type inbound struct {
	key    string // "{sender full JID} {sid}"
	sid    string
	from   string // sender's full JID
	to     string // the JID the sender offered the file to, as written
	owner  string // principal, for the per-principal bound
	name   string // file name in the store
	size   int64
	method string // the negotiated stream method

	up     *files.Upload
	stored func(ctx context.Context, d files.Descriptor) // after the commit; may be nil

	mu        sync.Mutex
	opened    bool // the stream was opened (IBB open, SOCKS5 streamhost)
	stanza    string
	blockSize int
	seq       uint16
	received  int64
	pace      time.Time // when the sender may send its next IBB block
	timer     *time.Timer
}

// transfers is the table of incoming transfers.
type transfers struct {
	a        *Adapter
	mu       sync.Mutex
	byKey    map[string]*inbound
	perOwner map[string]int
	total    int // reserved transfers, in the table or about to be
}

func newTransfers(a *Adapter) *transfers {
	return &transfers{a: a, byKey: map[string]*inbound{}, perOwner: map[string]int{}}
}

func transferKey(from, sid string) string { return from + " " + sid }

// reserve counts a transfer for owner against the bounds.
func (t *transfers) reserve(owner string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.total >= maxTransfers {
		return fmt.Errorf("%w: %d in all", errTooMany, t.total)
	}
	if t.perOwner[owner] >= maxTransfersPerPrincipal {
		return fmt.Errorf("%w: %s has %d", errTooMany, owner, t.perOwner[owner])
	}
	t.perOwner[owner]++
	t.total++
	return nil
}

func (t *transfers) release(owner string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.total--
	if t.perOwner[owner]--; t.perOwner[owner] <= 0 {
		delete(t.perOwner, owner)
	}
}

// add puts an accepted transfer into the table; its idle timer runs.
func (t *transfers) add(in *inbound) {
	t.mu.Lock()
	t.byKey[in.key] = in
	t.mu.Unlock()
	in.mu.Lock()
	in.timer = time.AfterFunc(transferIdleTimeout, func() { t.abort(in, errIdle) })
	in.mu.Unlock()
}

// get returns the transfer of a sender's sid.
func (t *transfers) get(from, sid string) *inbound {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byKey[transferKey(from, sid)]
}

// remove takes in out of the table; false if it was gone already.
func (t *transfers) remove(in *inbound) bool {
	t.mu.Lock()
	if t.byKey[in.key] != in {
		t.mu.Unlock()
		return false
	}
	delete(t.byKey, in.key)
	t.mu.Unlock()
	t.release(in.owner)
	in.mu.Lock()
	if in.timer != nil {
		in.timer.Stop()
	}
	in.mu.Unlock()
	return true
}

// abort ends a transfer with err: the upload is discarded, nothing is
// stored.
func (t *transfers) abort(in *inbound, err error) {
	if t.remove(in) {
		in.up.Abort()
		t.a.log.Info("xmpp: file transfer aborted", "from", in.from, "sid", in.sid, "name", in.name, "err", err)
	}
}

// finish ends the stream of a transfer: the upload is committed (and the
// target's follow-up run) unless the stream was short of the declared
// size.
func (t *transfers) finish(in *inbound) error {
	if !t.remove(in) {
		return errors.New("xmpp: transfer already ended")
	}
	in.mu.Lock()
	received := in.received
	in.mu.Unlock()
	if received < in.size {
		in.up.Abort()
		return fmt.Errorf("%w: %d of %d bytes", errShort, received, in.size)
	}
	ctx, cancel := context.WithTimeout(t.a.ctx, commitTimeout)
	defer cancel()
	d, err := in.up.Commit(ctx)
	if err != nil {
		return fmt.Errorf("xmpp: store %s: %w", in.name, err)
	}
	t.a.log.Info("xmpp: file stored", "name", d.Name, "size", d.Size, "from", in.from, "method", in.method)
	if in.stored != nil {
		// The follow-up (a device command waiting for its reply, a link
		// message) does not hold up the answer to the stream's end.
		t.a.wg.Add(1)
		go func() {
			defer t.a.wg.Done()
			in.stored(t.a.ctx, d) // ends with the adapter (a device command waiting for its reply)
		}()
	}
	return nil
}

// peerGone aborts every transfer from the full JID jid (its session ended).
func (t *transfers) peerGone(jid string) {
	t.mu.Lock()
	var gone []*inbound
	for _, in := range t.byKey {
		if in.from == jid {
			gone = append(gone, in)
		}
	}
	t.mu.Unlock()
	for _, in := range gone {
		t.abort(in, errInterrupted)
	}
}

// shutdown aborts every transfer.
func (t *transfers) shutdown() {
	t.mu.Lock()
	all := make([]*inbound, 0, len(t.byKey))
	for _, in := range t.byKey {
		all = append(all, in)
	}
	t.mu.Unlock()
	for _, in := range all {
		t.abort(in, errInterrupted)
	}
}

// write passes a block of the stream to Put, counting it against the
// declared size and re-arming the idle timer.
func (t *transfers) write(in *inbound, b []byte) error {
	in.mu.Lock()
	in.received += int64(len(b))
	over := in.received > in.size
	if in.timer != nil {
		in.timer.Reset(transferIdleTimeout)
	}
	in.mu.Unlock()
	if over {
		t.abort(in, errLong)
		return errLong
	}
	if _, err := in.up.Write(b); err != nil {
		t.abort(in, err)
		return fmt.Errorf("xmpp: store: %w", err)
	}
	return nil
}
