package storage

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"
)

// Pin records that root (a committed checkpoint, block or certificate) at
// height must survive garbage collection, and makes the store durable up to
// this point: everything written before a pin is on disk once Pin returns.
func (s *Store) Pin(ctx context.Context, root cid.Cid, height uint64) error {
	if ok, err := s.Has(ctx, root); err != nil || !ok {
		return fmt.Errorf("%w: cannot pin %s: not stored", ErrNotFound, root)
	}
	if err := s.ds.Put(ctx, pinsNS.ChildString(root.String()), binary.BigEndian.AppendUint64(nil, height)); err != nil {
		return err
	}
	return s.ds.Sync(ctx, ds.NewKey("/"))
}

// Unpin removes a pin (the blocks stay until the next GC).
func (s *Store) Unpin(ctx context.Context, root cid.Cid) error {
	return s.ds.Delete(ctx, pinsNS.ChildString(root.String()))
}

// PinInfo is one pin.
type PinInfo struct {
	Root   cid.Cid
	Height uint64
}

// Pins lists every pin, lowest height first.
func (s *Store) Pins(ctx context.Context) ([]PinInfo, error) {
	res, err := s.ds.Query(ctx, dsq.Query{Prefix: pinsNS.String()})
	if err != nil {
		return nil, err
	}
	entries, err := res.Rest()
	if err != nil {
		return nil, err
	}
	out := make([]PinInfo, 0, len(entries))
	for _, e := range entries {
		c, err := cid.Decode(ds.RawKey(e.Key).BaseNamespace())
		if err != nil || len(e.Value) != 8 {
			return nil, fmt.Errorf("storage: corrupt pin %q", e.Key)
		}
		out = append(out, PinInfo{Root: c, Height: binary.BigEndian.Uint64(e.Value)})
	}
	slices.SortFunc(out, func(a, b PinInfo) int {
		return cmp.Or(cmp.Compare(a.Height, b.Height), cmp.Compare(a.Root.KeyString(), b.Root.KeyString()))
	})
	return out, nil
}

// Retention says which pinned checkpoints to keep: the last KeepLast
// heights and every height divisible by KeepEvery (0 disables each rule).
// Blocks and certificates (the ledger) are never unpinned by it.
type Retention struct {
	KeepLast  int
	KeepEvery uint64
}

// ApplyRetention unpins the checkpoints the policy no longer keeps and
// returns them. Run GC afterwards to free their space.
func (s *Store) ApplyRetention(ctx context.Context, r Retention) ([]PinInfo, error) {
	pins, err := s.Pins(ctx)
	if err != nil {
		return nil, err
	}
	var checkpoints []PinInfo
	for _, p := range pins {
		obj, err := s.GetObject(ctx, p.Root)
		if err != nil {
			return nil, err
		}
		if _, ok := obj.(*Checkpoint); ok {
			checkpoints = append(checkpoints, p)
		}
	}
	var dropped []PinInfo
	for i, p := range checkpoints {
		recent := r.KeepLast > 0 && i >= len(checkpoints)-r.KeepLast
		milestone := r.KeepEvery > 0 && p.Height%r.KeepEvery == 0
		if recent || milestone {
			continue
		}
		if err := s.Unpin(ctx, p.Root); err != nil {
			return dropped, err
		}
		dropped = append(dropped, p)
	}
	return dropped, nil
}

// GC deletes every block not reachable from a pin and returns how many it
// removed. Reachability follows content links (a checkpoint's or update's
// shards) and, from blocks and certificates, lineage links (so a pinned
// ledger entry keeps its updates and result). A checkpoint's parent is not
// followed: retention decides which ancestors stay.
func (s *Store) GC(ctx context.Context) (int, error) {
	pins, err := s.Pins(ctx)
	if err != nil {
		return 0, err
	}
	live := map[string]bool{}
	var visit func(c cid.Cid) error
	visit = func(c cid.Cid) error {
		if live[string(c.Hash())] {
			return nil
		}
		live[string(c.Hash())] = true
		if c.Type() != cid.DagCBOR {
			return nil
		}
		obj, err := s.GetObject(ctx, c)
		if err != nil {
			return fmt.Errorf("storage: gc: reading pinned %s: %w", c, err)
		}
		content, lineage := Links(obj)
		for _, l := range content {
			if err := visit(l); err != nil {
				return err
			}
		}
		switch obj.(type) {
		case *Block, *Certificate:
			for _, l := range lineage {
				if ok, _ := s.Has(ctx, l); ok { // a pruned checkpoint may be gone
					if err := visit(l); err != nil {
						return err
					}
				}
			}
		}
		return nil
	}
	for _, p := range pins {
		if err := visit(p.Root); err != nil {
			return 0, err
		}
	}
	keys, err := s.bs.AllKeysChan(ctx)
	if err != nil {
		return 0, err
	}
	var dead []cid.Cid
	for c := range keys {
		if !live[string(c.Hash())] {
			dead = append(dead, c)
		}
	}
	for _, c := range dead {
		if err := s.bs.DeleteBlock(ctx, c); err != nil {
			return 0, err
		}
	}
	return len(dead), s.ds.Sync(ctx, ds.NewKey("/"))
}
