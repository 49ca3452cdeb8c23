package storage

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"sync"
	"testing"

	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"

	"github.com/murmur-ml/murmur/shard"
)

// hookDatastore runs hook once, just before the first read of key.
type hookDatastore struct {
	ds.Batching
	key  ds.Key
	once sync.Once
	hook func()
}

func (h *hookDatastore) Get(ctx context.Context, k ds.Key) ([]byte, error) {
	if k == h.key {
		h.once.Do(h.hook)
	}
	return h.Batching.Get(ctx, k)
}

// A fetch writes without the store's lock, manifest first: an update that
// arrives during a collection and lists a shard the collection already
// judged dead (equal content, equal CID) keeps it.
func TestGCKeepsWhatArrivesMeanwhile(t *testing.T) {
	ctx := context.Background()
	hd := &hookDatastore{Batching: dssync.MutexWrap(ds.NewMapDatastore())}
	s := NewStore(hd, nil)
	signer := edSigner{ed25519.NewKeyFromSeed(bytes.Repeat([]byte{5}, 32))}
	layers := []Layer{{Name: "w", Shape: []int{64}}}
	old, err := s.PutUpdate(ctx, UpdateInput{Network: "n", Height: 1, Base: mustCID("base"), Layers: layers,
		Delta: make([]float32, 64), Samples: 1, Codec: shard.Dense}, signer)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := s.GetObject(ctx, old)
	if err != nil {
		t.Fatal(err)
	}
	u := *obj.(*Update)
	u.Height = 9 // another update, the same (all-zero) shard
	var arrived cid.Cid
	hd.key = blockKey(old) // read while the collection looks for work in flight
	hd.hook = func() {
		if arrived, err = s.PutObject(ctx, &u); err != nil {
			t.Error(err)
		}
	}
	if _, err := s.GC(ctx, Collection{InFlightFrom: 5}); err != nil {
		t.Fatal(err)
	}
	if !arrived.Defined() {
		t.Fatal("the hook never ran: the test shows nothing")
	}
	if ok, _ := s.Has(ctx, old); ok {
		t.Error("the old, unlisted update survived")
	}
	if _, _, err := s.GetUpdate(ctx, arrived, layers); err != nil {
		t.Fatalf("the update that arrived during the collection lost its shard: %v", err)
	}
}
