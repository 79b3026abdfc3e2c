package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/hubsmith/hub/adapters"
)

// pprofServer serves Go's profiles (net/http/pprof) on an address of its
// own (--pprof-addr), never on the REST listener: CPU, heap, goroutine and
// block profiles of a running hub, for the performance work.
type pprofServer struct {
	addr string
	log  *slog.Logger

	mu  sync.Mutex
	srv *http.Server
	ln  net.Listener
	wg  sync.WaitGroup
}

var _ adapters.Adapter = (*pprofServer)(nil)

// Name returns "pprof".
func (p *pprofServer) Name() string { return "pprof" }

// Start binds the address and serves the profiles.
func (p *pprofServer) Start(context.Context) error {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		return fmt.Errorf("pprof: listen %s: %w", p.addr, err)
	}
	if !adapters.IsLoopback(p.addr) {
		p.log.Warn("pprof: profiles served off loopback: they show the hub's internals to anyone who can connect", "addr", ln.Addr().String())
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	p.mu.Lock()
	p.srv, p.ln = srv, ln
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			p.log.Warn("pprof: serve", "err", err)
		}
	}()
	p.log.Info("pprof: serving profiles", "addr", ln.Addr().String())
	return nil
}

// Stop closes the listener and waits for the server to end.
func (p *pprofServer) Stop(ctx context.Context) error {
	p.mu.Lock()
	srv := p.srv
	p.mu.Unlock()
	if srv == nil {
		return nil
	}
	err := srv.Shutdown(ctx)
	p.wg.Wait()
	return err
}

// Addrs reports the bound address.
func (p *pprofServer) Addrs() map[string]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		return map[string]string{}
	}
	return map[string]string{"pprof": p.ln.Addr().String()}
}
