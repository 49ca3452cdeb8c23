package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/murmur-ml/murmur/storage"
)

// maxImportBytes bounds a CAR posted to /import.
const maxImportBytes = 1 << 30

// Handler is the peer's HTTP API:
//
//	GET  /status        Status as JSON
//	GET  /metrics       Prometheus metrics
//	GET  /block/{cid}   one raw block, as stored (verified on the way in)
//	POST /import        a CAR v1 body, verified whole, then stored
//	GET  /healthz       200 while the peer runs
//
// It lets peer status, inspect, export and import work while the peer runs
// (the store is locked by the running peer).
func (p *Peer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(p.Status())
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(p.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /block/{cid}", func(w http.ResponseWriter, r *http.Request) {
		c, err := cid.Decode(r.PathValue("cid"))
		if err != nil {
			http.Error(w, "not a CID: "+err.Error(), http.StatusBadRequest)
			return
		}
		b, err := p.store.Get(r.Context(), c)
		if errors.Is(err, storage.ErrNotFound) {
			http.Error(w, "not stored here: "+c.String(), http.StatusNotFound)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(b)
	})
	mux.HandleFunc("POST /import", func(w http.ResponseWriter, r *http.Request) {
		roots, n, err := p.store.ImportCAR(r.Context(), http.MaxBytesReader(w, r.Body, maxImportBytes))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rs := make([]string, len(roots))
		for i, c := range roots {
			rs[i] = c.String()
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"roots": rs, "blocks": n})
	})
	return mux
}

// ServeAPI serves Handler on addr until ctx ends; the listener is open when
// it returns without error (the caller may then print the address).
func (p *Peer) ServeAPI(ctx context.Context, addr string) (net.Addr, <-chan error, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: api.listen: %w", ErrConfig, err)
	}
	srv := &http.Server{Handler: p.Handler(), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() {
		err := srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		done <- err
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	return ln.Addr(), done, nil
}
