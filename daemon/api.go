package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/murmur-ml/murmur/consensus"
	"github.com/murmur-ml/murmur/storage"
)

// maxImportBytes bounds a CAR posted to /import.
const maxImportBytes = 1 << 30

// Handler is the peer's HTTP API:
//
//	GET  /status        Status as JSON
//	GET  /metrics       Prometheus metrics
//	GET  /block/{cid}   one raw block, as stored (verified on the way in)
//	GET  /commit/{h}    the committed block at height h: CID, result,
//	                    proposer, round, signers, and each update's author
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
	mux.HandleFunc("GET /commit/{height}", func(w http.ResponseWriter, r *http.Request) {
		h, err := strconv.ParseUint(r.PathValue("height"), 10, 64)
		if err != nil || h == 0 {
			http.Error(w, "height: want a committed height ≥ 1, got "+strconv.Quote(r.PathValue("height")), http.StatusBadRequest)
			return
		}
		v, err := p.CommitAt(r.Context(), h)
		if errors.Is(err, ErrNotCommitted) {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	})
	mux.HandleFunc("POST /import", func(w http.ResponseWriter, r *http.Request) {
		roots, n, err := p.store.ImportCAR(r.Context(), http.MaxBytesReader(w, r.Body, maxImportBytes))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for _, c := range roots { // nothing else refers to them: keep them from collection
			if err := p.store.Keep(r.Context(), c); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
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

// ErrNotCommitted reports a height this peer has not committed.
var ErrNotCommitted = errors.New("daemon: not committed here")

// CommitView is one ledger entry as the API shows it: the block, the
// certificate's round and signers, and who contributed each update.
type CommitView struct {
	Height   uint64        `json:"height"`
	Block    string        `json:"block"`
	Base     string        `json:"base"`
	Result   string        `json:"result"`
	Proposer string        `json:"proposer"`
	Rule     string        `json:"rule"`
	Round    int32         `json:"round"`
	Signers  []string      `json:"signers"`
	Updates  []UpdateEntry `json:"updates"`
}

// UpdateEntry is one update a block lists; Author and Samples are empty if
// this peer does not hold the update (a peer that caught up from commits).
type UpdateEntry struct {
	CID     string `json:"cid"`
	Author  string `json:"author,omitempty"`
	Samples int    `json:"samples,omitempty"`
}

// CommitAt reads the commit at height h from this peer's ledger.
func (p *Peer) CommitAt(ctx context.Context, h uint64) (*CommitView, error) {
	p.mu.Lock()
	if h < 1 || h > uint64(len(p.commits)) {
		p.mu.Unlock()
		return nil, fmt.Errorf("%w: height %d", ErrNotCommitted, h)
	}
	enc, blk := p.commits[h-1], p.blocks[h-1] // the block decoded once, at commit
	p.mu.Unlock()
	msg, err := consensus.Decode(enc)
	if err != nil {
		return nil, err
	}
	cm, ok := msg.(*consensus.Commit)
	if !ok {
		return nil, fmt.Errorf("daemon: ledger entry %d is a %T", h, msg)
	}
	_, c, err := storage.Encode(blk)
	if err != nil {
		return nil, err
	}
	v := &CommitView{Height: h, Block: c.String(), Base: blk.Base.String(), Result: blk.Result.String(),
		Proposer: blk.Proposer, Rule: blk.Rule, Round: cm.Certificate.Round}
	for _, vote := range cm.Certificate.Precommits {
		v.Signers = append(v.Signers, vote.Validator)
	}
	for _, l := range blk.Updates {
		e := UpdateEntry{CID: l.String()}
		if o, err := p.store.GetObject(ctx, l.Cid); err == nil {
			if u, ok := o.(*storage.Update); ok {
				e.Author, e.Samples = u.Author, u.Samples
			}
		}
		v.Updates = append(v.Updates, e)
	}
	return v, nil
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
