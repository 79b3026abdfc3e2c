package adapters

import (
	"mime"
	"sync"
	"sync/atomic"
)

// maxCachedTypes bounds the content types MediaType remembers: a hub sees
// a handful, but they come from clients, so the cache must not grow with
// whatever a client sends: when full it starts again empty.
const maxCachedTypes = 128

type mediaTypeEntry struct {
	mt string
	ok bool
}

// mediaTypes is a copy-on-write map: readers load it without a lock (the
// delivery path asks once or twice per message), writers copy it.
var (
	mediaTypes   atomic.Pointer[map[string]mediaTypeEntry]
	mediaTypesMu sync.Mutex
)

// MediaType returns the media type of a Content-Type value as
// mime.ParseMediaType does (lower-cased, parameters dropped), and false
// when it does not parse. It is what the encoders of every delivery ask
// of an envelope's content type; answers are remembered (up to
// maxCachedTypes values), so the common ones cost no allocation
// (mime.ParseMediaType allocates a map of parameters each call).
func MediaType(contentType string) (string, bool) {
	if m := mediaTypes.Load(); m != nil {
		if e, ok := (*m)[contentType]; ok {
			return e.mt, e.ok
		}
	}
	mt, _, err := mime.ParseMediaType(contentType)
	e := mediaTypeEntry{mt: mt, ok: err == nil}
	mediaTypesMu.Lock()
	defer mediaTypesMu.Unlock()
	old := mediaTypes.Load()
	n := 0
	if old != nil {
		n = len(*old)
	}
	m := make(map[string]mediaTypeEntry, min(n+1, maxCachedTypes))
	if old != nil && n < maxCachedTypes {
		for k, v := range *old {
			m[k] = v
		}
	} // else full (of what clients sent): start again, the common types come back
	m[contentType] = e
	mediaTypes.Store(&m)
	return e.mt, e.ok
}
