package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/ipfs/boxo/datastore/dshelp"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"

	"github.com/murmur-ml/murmur/storage"
)

// remoteDatastore reads blocks through a running peer's API: a store held
// by a running peer is locked, so inspect and export ask the peer for each
// block they need (verified again here, by the validating blockstore).
type remoteDatastore struct {
	ds.Batching
	ctx  context.Context
	base string
}

const blocksPrefix = "/blocks/"

func (r *remoteDatastore) fetch(k ds.Key) error {
	s := k.String()
	if !strings.HasPrefix(s, blocksPrefix) {
		return ds.ErrNotFound
	}
	h, err := dshelp.DsKeyToMultihash(ds.NewKey(strings.TrimPrefix(s, blocksPrefix)))
	if err != nil {
		return ds.ErrNotFound
	}
	c := cid.NewCidV1(cid.Raw, h) // the peer's blockstore is keyed by multihash
	req, err := http.NewRequestWithContext(r.ctx, http.MethodGet, r.base+"/block/"+c.String(), nil)
	if err != nil {
		return err
	}
	resp, err := apiClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return ds.ErrNotFound
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s/block/%s: %s", r.base, c, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	return r.Batching.Put(r.ctx, k, b)
}

func (r *remoteDatastore) Get(ctx context.Context, k ds.Key) ([]byte, error) {
	b, err := r.Batching.Get(ctx, k)
	if errors.Is(err, ds.ErrNotFound) {
		if err = r.fetch(k); err == nil {
			return r.Batching.Get(ctx, k)
		}
	}
	return b, err
}

func (r *remoteDatastore) Has(ctx context.Context, k ds.Key) (bool, error) {
	if ok, err := r.Batching.Has(ctx, k); ok || err != nil {
		return ok, err
	}
	if err := r.fetch(k); errors.Is(err, ds.ErrNotFound) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	return true, nil
}

func (r *remoteDatastore) GetSize(ctx context.Context, k ds.Key) (int, error) {
	b, err := r.Get(ctx, k)
	return len(b), err
}

// openStoreOrPeer opens the home's store, or, when a running peer holds
// it, a read-through view of that peer's store over its API.
func openStoreOrPeer(ctx context.Context, home string) (*storage.Store, error) {
	s, err := openStore(home, false)
	if err == nil {
		return s, nil
	}
	if _, statErr := os.Stat(filepath.Join(home, "store")); statErr != nil {
		return nil, err
	}
	base, aerr := apiURL(home, "")
	if aerr != nil {
		return nil, err
	}
	if _, serr := getStatus(ctx, base); serr != nil {
		return nil, fmt.Errorf("%w (and no running peer answers: %v)", err, serr)
	}
	return storage.NewStore(&remoteDatastore{Batching: dssync.MutexWrap(ds.NewMapDatastore()), ctx: ctx, base: base}, nil), nil
}

// importThroughPeer posts a CAR file to the running peer that holds the
// store; it verifies the file whole before storing any of it.
func importThroughPeer(ctx context.Context, home string, car []byte) (string, error) {
	base, err := apiURL(home, "")
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/import", bytes.NewReader(car))
	if err != nil {
		return "", err
	}
	resp, err := apiClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("the running peer refused it: %s", strings.TrimSpace(string(b)))
	}
	return string(b), nil
}
