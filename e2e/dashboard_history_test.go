package e2e

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/hubsmith/hub/hubtest"
)

// TestDashboardHistoryContract holds the charts to the JSON of GET
// /api/v1/history/{topic} as the history engineer fixed it
// ({"topic","series":[{"field","points":[{"time","value"}]}]}, oldest
// first). That endpoint is not on this branch, so a proxy in front of
// the hub answers it for one topic with that shape and passes everything
// else through: a chart loads the history, then adds the live point.
func TestDashboardHistoryContract(t *testing.T) {
	h := hubtest.Start(t)
	hubURL, _ := url.Parse("http://" + loopback(t, h.Addr(t, "rest.http")))
	proxy := httputil.NewSingleHostReverseProxy(hubURL)
	proxy.FlushInterval = -1 // SSE
	now := time.Now().UTC()
	var mu sync.Mutex
	var asked []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		topic, ok := strings.CutPrefix(r.URL.Path, "/api/v1/history/")
		if !ok {
			proxy.ServeHTTP(w, r)
			return
		}
		mu.Lock()
		asked = append(asked, topic+"?"+r.URL.RawQuery)
		mu.Unlock()
		if topic != "home/t" {
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"error":"no history"}`))
			return
		}
		type point struct {
			Time  time.Time `json:"time"`
			Value float64   `json:"value"`
		}
		body := map[string]any{"topic": topic, "series": []map[string]any{{"field": "value", "points": []point{
			{now.Add(-30 * time.Minute), 19.5}, {now.Add(-20 * time.Minute), 20}, {now.Add(-10 * time.Minute), 20.5},
		}}}}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(body)
	}))
	// Cleanups run last first: the browser goes (and its event stream
	// with it) before the proxy closes, which waits for its connections.
	t.Cleanup(func() { srv.CloseClientConnections(); srv.Close() })
	ctx := browser(t, 1024, 800)

	run(t, ctx, "open the dashboard", chromedp.Navigate(srv.URL+"/"), chromedp.WaitVisible(chromedp.CSS(`#health`)))
	waitJS(t, ctx, "the live stream", `document.getElementById('live-state').textContent === 'live'`)
	for _, topic := range []string{"home/t", "home/h"} {
		if s, b, _ := httpDo(t, http.MethodPost, hubURL.String()+"/api/v1/topics/"+topic, "text/plain", "21"); s != http.StatusAccepted {
			t.Fatalf("publish %s: %d %s", topic, s, b)
		}
	}
	waitJS(t, ctx, "history and the live point in one chart", `(() => {
		const c = document.querySelector('.chart[data-topic="home/t"]');
		return !!c && /^4 points · 3 points of history/.test(c.querySelector('small.muted').textContent)
			&& c.querySelector('.last-value').textContent.includes('value=21');
	})()`)
	waitJS(t, ctx, "a topic without history", `(() => {
		const c = document.querySelector('.chart[data-topic="home/h"]');
		return !!c && /^1 points · no history yet/.test(c.querySelector('small.muted').textContent);
	})()`)
	mu.Lock()
	defer mu.Unlock()
	if len(asked) != 2 {
		t.Fatalf("history asked %d times: %q", len(asked), asked)
	}
	for _, q := range asked {
		v, err := url.ParseQuery(strings.SplitN(q, "?", 2)[1])
		since, perr := time.Parse(time.RFC3339, v.Get("since"))
		if err != nil || perr != nil || since.After(now) || now.Sub(since) > 2*time.Hour || v.Get("limit") == "" {
			t.Errorf("history query %q: since %v (%v), limit %q", q, since, perr, v.Get("limit"))
		}
	}
}
