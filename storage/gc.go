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

// Keep records that root must survive garbage collection whole, outside
// the retention policy (an imported model or update: nothing else refers
// to it).
func (s *Store) Keep(ctx context.Context, root cid.Cid) error {
	if ok, err := s.Has(ctx, root); err != nil || !ok {
		return fmt.Errorf("%w: cannot keep %s: not stored", ErrNotFound, root)
	}
	return s.ds.Put(ctx, keptNS.ChildString(root.String()), nil)
}

// Collection is what GC keeps beyond pinned and kept roots.
type Collection struct {
	// Blocks are the committed ledger's blocks (the ledger is their
	// durable record; the store holds copies to serve and inspect). Each
	// stays, with the manifests of the updates it lists and of its base
	// and result models: the lineage, who contributed what with which ε,
	// stays auditable by CID.
	Blocks []*Block
	// TensorsFrom: the objects that blocks below this height list keep
	// their manifests but lose their tensors (unless a pin keeps them);
	// those of later blocks stay whole. 0 keeps every listed object whole.
	TensorsFrom uint64
	// InFlightFrom: updates, models and blocks at this height or above stay
	// whole even when nothing lists them yet: work in progress (fetched,
	// trained, aggregated or just committed). 0: none.
	InFlightFrom uint64
}

// GC deletes every block that no pin, kept root or rule of c keeps, and
// returns how many it removed. A pinned or kept root stays with its content
// (a model's or update's shards); a model's parent is not followed:
// retention decides which ancestors stay. Writers of multi-block objects
// wait while it runs (and it for them), so it never takes shards whose
// manifest is still to come.
func (s *Store) GC(ctx context.Context, c Collection) (int, error) {
	s.gc.Lock()
	defer s.gc.Unlock()
	expanded := map[string]bool{}
	live := map[string]bool{}
	// whole marks root and its content (a root first marked alone, as an
	// old block's lineage, may be whole for a later one: the base of the
	// first block that keeps its tensors is the result of the last that
	// does not).
	whole := func(root cid.Cid) error {
		if expanded[string(root.Hash())] {
			return nil
		}
		expanded[string(root.Hash())] = true
		live[string(root.Hash())] = true
		if root.Type() != cid.DagCBOR {
			return nil
		}
		obj, err := s.GetObject(ctx, root)
		if err != nil {
			return fmt.Errorf("storage: gc: reading %s: %w", root, err)
		}
		content, _ := Links(obj)
		for _, l := range content {
			live[string(l.Hash())] = true
		}
		return nil
	}
	present := func(l cid.Cid) bool { ok, _ := s.Has(ctx, l); return ok }
	roots, err := s.roots(ctx)
	if err != nil {
		return 0, err
	}
	for _, r := range roots {
		if err := whole(r); err != nil {
			return 0, err
		}
	}
	for _, b := range c.Blocks {
		_, bc, err := Encode(b)
		if err != nil {
			return 0, fmt.Errorf("storage: gc: ledger block %d: %w", b.Height, err)
		}
		live[string(bc.Hash())] = true
		_, lineage := Links(b)
		for _, l := range lineage {
			switch {
			case c.TensorsFrom > 0 && b.Height < c.TensorsFrom:
				// Old: the manifest alone. No read, not even a lookup
				// (marking an absent block live deletes nothing), so the
				// long tail of the chain costs memory work only.
				live[string(l.Hash())] = true
			case present(l): // recent and here (not every update is fetched everywhere)
				if err := whole(l); err != nil {
					return 0, err
				}
			}
		}
	}
	keys, err := s.bs.AllKeysChan(ctx)
	if err != nil {
		return 0, err
	}
	var all []cid.Cid
	for k := range keys {
		all = append(all, k)
	}
	if c.InFlightFrom > 0 {
		for _, k := range all {
			if live[string(k.Hash())] {
				continue
			}
			// The blockstore lists multihashes (as raw CIDs): try each block
			// as one of our dag-cbor objects; shards fail to decode.
			k = cid.NewCidV1(cid.DagCBOR, k.Hash())
			obj, err := s.GetObject(ctx, k)
			if err != nil {
				continue // a shard, not one of ours, or damaged: not kept for it
			}
			var h uint64
			switch o := obj.(type) {
			case *Update:
				h = o.Height
			case *Checkpoint:
				h = o.Height
			case *Block:
				h = o.Height // committed a moment ago: not in c.Blocks yet
			default:
				continue
			}
			if h >= c.InFlightFrom {
				if err := whole(k); err != nil {
					return 0, err
				}
			}
		}
	}
	// Fetches write without the lock (a manifest first, then its shards):
	// one that arrived meanwhile may list a shard already stored and
	// listed as dead here (equal content, equal CID). Keep the content of
	// every object that appeared during the collection.
	listed := make(map[string]bool, len(all))
	for _, k := range all {
		listed[string(k.Hash())] = true
	}
	again, err := s.bs.AllKeysChan(ctx)
	if err != nil {
		return 0, err
	}
	var arrived []cid.Cid
	for k := range again {
		if !listed[string(k.Hash())] {
			arrived = append(arrived, k)
		}
	}
	for _, k := range arrived {
		if obj, err := s.GetObject(ctx, cid.NewCidV1(cid.DagCBOR, k.Hash())); err == nil {
			content, _ := Links(obj)
			for _, l := range content {
				live[string(l.Hash())] = true
			}
		}
	}
	n := 0
	for _, k := range all {
		if live[string(k.Hash())] {
			continue
		}
		if err := s.bs.DeleteBlock(ctx, k); err != nil {
			return n, err
		}
		n++
	}
	return n, s.ds.Sync(ctx, ds.NewKey("/"))
}

// roots are the pinned and the kept roots.
func (s *Store) roots(ctx context.Context) ([]cid.Cid, error) {
	pins, err := s.Pins(ctx)
	if err != nil {
		return nil, err
	}
	var out []cid.Cid
	for _, p := range pins {
		out = append(out, p.Root)
	}
	res, err := s.ds.Query(ctx, dsq.Query{Prefix: keptNS.String(), KeysOnly: true})
	if err != nil {
		return nil, err
	}
	entries, err := res.Rest()
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		c, err := cid.Decode(ds.RawKey(e.Key).BaseNamespace())
		if err != nil {
			return nil, fmt.Errorf("storage: corrupt kept root %q", e.Key)
		}
		out = append(out, c)
	}
	return out, nil
}
