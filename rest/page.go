package rest

import (
	"net/http"
	"net/url"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
)

// Pagination of the list endpoints (a filter read of retained values,
// users, devices): `limit` items a page (DefaultPageLimit, at most
// MaxPageLimit) after the key given in `after`, sorted by key. A page
// that is not the last names the next one in a Link header (rel="next",
// RFC 8288) and in HeaderNext, the `after` value to ask for it.
const (
	DefaultPageLimit = 100
	MaxPageLimit     = 1000
	// MaxPageBytes bounds the payload bytes of one page of retained
	// values: a page ends early past it (it holds at least one value), so
	// a filter read never builds a response much larger than this.
	MaxPageBytes = 4 << 20
	// HeaderNext carries the `after` value of the next page.
	HeaderNext = "X-Hub-Next"
)

// page is a parsed `limit` and `after`.
type page struct {
	limit int
	after string
}

// parsePage reads the pagination parameters of c.
func parsePage(c *gin.Context) (page, error) {
	p := page{limit: DefaultPageLimit, after: c.Query("after")}
	if s, ok := c.GetQuery("limit"); ok {
		n, err := parsePageLimit(s)
		if err != nil {
			return page{}, err
		}
		p.limit = n
	}
	return p, nil
}

// parsePageLimit reads a `limit` value: 1..MaxPageLimit in decimal.
func parsePageLimit(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > MaxPageLimit || strconv.Itoa(n) != s {
		return 0, badRequest("limit %q: must be 1..%d (default %d)", trunc(s), MaxPageLimit, DefaultPageLimit)
	}
	return n, nil
}

// setNext names the page after the one answered, whose last key is last.
func setNext(c *gin.Context, p page, last string) {
	q := c.Request.URL.Query()
	q.Set("after", last)
	q.Set("limit", strconv.Itoa(p.limit))
	u := url.URL{Path: c.Request.URL.Path, RawPath: c.Request.URL.RawPath, RawQuery: q.Encode()}
	c.Header("Link", "<"+u.String()+`>; rel="next"`)
	c.Header(HeaderNext, last)
}

// paginate answers the page of items (sorted by key) that p asks for,
// naming the next one when there are more.
func paginate[T any](c *gin.Context, p page, items []T, key func(T) string) []T {
	i := 0
	if p.after != "" {
		for i < len(items) && key(items[i]) <= p.after {
			i++
		}
	}
	items = items[i:]
	if len(items) > p.limit {
		items = items[:p.limit]
		setNext(c, p, key(items[len(items)-1]))
	}
	return items
}

// retainedPage is the page pg of the retained values rs (sorted by topic)
// that p may read, naming the next page when there are more.
func (a *Adapter) retainedPage(c *gin.Context, p adapters.Principal, pg page, rs []*broker.Envelope) []EnvelopeJSON {
	ctx := c.Request.Context()
	out := make([]EnvelopeJSON, 0, min(len(rs), pg.limit))
	bytes := 0
	for i, e := range rs {
		if pg.after != "" && e.Topic <= pg.after {
			continue
		}
		if len(out) == pg.limit || len(out) > 0 && bytes+len(e.Payload) > MaxPageBytes {
			setNext(c, pg, rs[i-1].Topic)
			break
		}
		if a.readable(ctx, p, e) {
			out = append(out, envelopeJSON(e, 2, originShown(p, e)))
			bytes += len(e.Payload)
		}
	}
	return out
}

// retainedPaged answers the page pg of filter's retained values from a
// bus that reads them a page at a time (the in-process bus, whose large
// values are on disk: only this page of them is read).
func (a *Adapter) retainedPaged(c *gin.Context, p adapters.Principal, pg page, filter string, pager broker.RetainedPager) {
	ctx := c.Request.Context()
	rs, more, err := pager.RetainedPage(ctx, filter, pg.after, pg.limit, MaxPageBytes)
	if err != nil {
		a.fail(c, err)
		return
	}
	out := make([]EnvelopeJSON, 0, len(rs))
	for _, e := range rs {
		if a.readable(ctx, p, e) {
			out = append(out, envelopeJSON(e, 2, originShown(p, e)))
		}
	}
	if more && len(rs) > 0 {
		setNext(c, pg, rs[len(rs)-1].Topic)
	}
	c.JSON(http.StatusOK, out)
}
