package storage

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"

	"github.com/murmur-ml/murmur/shard"
)

// Model is what a checkpoint stores: an architecture and its parameters.
type Model struct {
	Arch   string
	Layers []Layer
	Params []float32
}

func (m Model) tensors() []shard.Tensor {
	t := make([]shard.Tensor, len(m.Layers))
	for i, l := range m.Layers {
		t[i] = shard.Tensor{Name: l.Name, Len: l.Size()}
	}
	return t
}

// putShards encodes each span of values with the codec and stores it as a
// raw block. A shard that is already stored (an unchanged layer slice) is
// not written again: blocks are keyed by their hash.
func (s *Store) putShards(ctx context.Context, tensors []shard.Tensor, values []float32, codec shard.Codec, topK float64) ([]ShardRef, error) {
	plan, err := shard.Plan(tensors, 0)
	if err != nil {
		return nil, err
	}
	parts, err := shard.Split(tensors, values, plan)
	if err != nil {
		return nil, err
	}
	refs := make([]ShardRef, len(plan))
	blks := make([]blocks.Block, len(plan))
	// Encoding and hashing are independent per shard: spread them over the
	// cores (each shard's result lands in its own slot, so the outcome does
	// not depend on scheduling).
	err = parallel(ctx, len(parts), func(i int) error {
		p := parts[i]
		k := max(1, int(topK*float64(len(p))))
		b, err := shard.Encode(codec, p, k)
		if err != nil {
			return err
		}
		c, err := cidOf(cid.Raw, b)
		if err != nil {
			return err
		}
		// c was computed from b just now: no second hash before storing.
		if blks[i], err = blocks.NewBlockWithCid(b, c); err != nil {
			return err
		}
		refs[i] = ShardRef{Tensor: plan[i].Tensor, Offset: plan[i].Offset, Len: plan[i].Len, Link: Link{c}}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// One batch for all shards: one commit instead of one per shard.
	if err := s.bs.PutMany(ctx, blks); err != nil {
		return nil, err
	}
	return refs, nil
}

// getShards fetches and re-hashes every shard and decodes it straight into
// its place in the parameter vector.
func (s *Store) getShards(ctx context.Context, tensors []shard.Tensor, refs []ShardRef) ([]float32, error) {
	plan := make([]shard.Span, len(refs))
	for i, r := range refs {
		plan[i] = shard.Span{Tensor: r.Tensor, Offset: r.Offset, Len: r.Len}
	}
	starts, total, err := shard.Place(tensors, plan)
	if err != nil {
		return nil, err
	}
	out := make([]float32, total)
	// Spans are disjoint (Place checked), so shards decode in parallel.
	err = parallel(ctx, len(refs), func(i int) error {
		r := refs[i]
		b, err := s.Get(ctx, r.Link.Cid)
		if err != nil {
			return err
		}
		if _, err := shard.DecodeInto(out[starts[i]:starts[i]+r.Len], b); err != nil {
			return fmt.Errorf("shard %s: %w", r.Link, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// parallel runs f(0..n-1) on up to GOMAXPROCS goroutines and returns the
// error of the lowest index that failed (deterministic whatever the order).
func parallel(ctx context.Context, n int, f func(i int) error) error {
	errs := make([]error, n)
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(n, runtime.GOMAXPROCS(0)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				errs[i] = f(i)
			}
		}()
	}
	for i := 0; i < n; i++ {
		if ctx.Err() != nil {
			errs[i] = ctx.Err()
			continue
		}
		next <- i
	}
	close(next)
	wg.Wait()
	return firstErr(errs)
}

func firstErr(errs []error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// CheckpointMeta is what a checkpoint records besides the model.
type CheckpointMeta struct {
	Height  uint64
	Parent  cid.Cid // cid.Undef for the genesis model
	Metrics map[string]float64
}

// PutCheckpoint stores a model as dense shards plus a checkpoint manifest
// and returns the manifest's CID.
func (s *Store) PutCheckpoint(ctx context.Context, m Model, meta CheckpointMeta) (cid.Cid, error) {
	s.gc.RLock()
	defer s.gc.RUnlock()
	refs, err := s.putShards(ctx, m.tensors(), m.Params, shard.Dense, 0)
	if err != nil {
		return cid.Undef, err
	}
	ck := &Checkpoint{Kind: KindCheckpoint, Version: FormatVersion, Arch: m.Arch, Layers: m.Layers, DType: "float32",
		Height: meta.Height, Shards: refs, Metrics: meta.Metrics}
	if meta.Parent.Defined() {
		ck.Parent = &Link{meta.Parent}
	}
	return s.PutObject(ctx, ck)
}

// GetCheckpoint reads a checkpoint and its parameters, every block
// re-hashed.
func (s *Store) GetCheckpoint(ctx context.Context, c cid.Cid) (*Checkpoint, Model, error) {
	obj, err := s.GetObject(ctx, c)
	if err != nil {
		return nil, Model{}, err
	}
	ck, ok := obj.(*Checkpoint)
	if !ok {
		return nil, Model{}, fmt.Errorf("%w: %s is a %T, not a checkpoint", ErrUnknownKind, c, obj)
	}
	m := Model{Arch: ck.Arch, Layers: ck.Layers}
	if m.Params, err = s.getShards(ctx, m.tensors(), ck.Shards); err != nil {
		return nil, Model{}, err
	}
	return ck, m, nil
}

// Signer signs with a peer's identity key; ID is the peer ID it signs as.
type Signer interface {
	ID() string
	Sign(msg []byte) ([]byte, error)
}

// updateDomain separates update signatures from every other signature a
// peer key makes (votes, announcements).
const updateDomain = "murmur/update/v1\x00"

// SigningBytes is what an update's signature covers: a domain tag, then the
// canonical encoding of the update without its signature (which holds the
// network name and the height, DESIGN.md §2).
func SigningBytes(u *Update) ([]byte, error) {
	unsigned := *u
	unsigned.Signature = nil
	b, _, err := Encode(&unsigned)
	if err != nil {
		return nil, err
	}
	return append([]byte(updateDomain), b...), nil
}

// UpdateInput is a trainer's update before it is stored.
type UpdateInput struct {
	Network string
	Height  uint64
	Base    cid.Cid
	Layers  []Layer
	Delta   []float32
	Samples int
	Codec   shard.Codec
	TopK    float64 // fraction of each shard's values kept by the top-k codec
	Clip    float64
	Sigma   float64
	Epsilon float64
}

// PutUpdate encodes the delta's shards, signs the manifest and stores it.
func (s *Store) PutUpdate(ctx context.Context, in UpdateInput, signer Signer) (cid.Cid, error) {
	s.gc.RLock()
	defer s.gc.RUnlock()
	if in.Codec == shard.TopK && !(in.TopK > 0 && in.TopK <= 1) {
		return cid.Undef, fmt.Errorf("%w: top-k fraction %v must be in (0,1]", ErrMalformed, in.TopK)
	}
	m := Model{Layers: in.Layers}
	refs, err := s.putShards(ctx, m.tensors(), in.Delta, in.Codec, in.TopK)
	if err != nil {
		return cid.Undef, err
	}
	u := &Update{Kind: KindUpdate, Version: FormatVersion, Network: in.Network, Height: in.Height, Base: Link{in.Base},
		Author: signer.ID(), Samples: in.Samples, Codec: in.Codec.String(), Clip: in.Clip, Sigma: in.Sigma,
		Epsilon: in.Epsilon, Shards: refs}
	msg, err := SigningBytes(u)
	if err != nil {
		return cid.Undef, err
	}
	if u.Signature, err = signer.Sign(msg); err != nil {
		return cid.Undef, fmt.Errorf("storage: signing update: %w", err)
	}
	return s.PutObject(ctx, u)
}

// GetUpdate reads an update and its decoded delta. layers is the
// architecture of the base model (the update does not repeat it).
func (s *Store) GetUpdate(ctx context.Context, c cid.Cid, layers []Layer) (*Update, []float32, error) {
	obj, err := s.GetObject(ctx, c)
	if err != nil {
		return nil, nil, err
	}
	u, ok := obj.(*Update)
	if !ok {
		return nil, nil, fmt.Errorf("%w: %s is a %T, not an update", ErrUnknownKind, c, obj)
	}
	delta, err := s.getShards(ctx, Model{Layers: layers}.tensors(), u.Shards)
	return u, delta, err
}

// SortLinks orders CIDs as blocks list them (by their bytes).
func SortLinks(cs []cid.Cid) []Link {
	out := make([]Link, len(cs))
	for i, c := range cs {
		out[i] = Link{c}
	}
	slices.SortFunc(out, func(a, b Link) int { return bytes.Compare(a.Bytes(), b.Bytes()) })
	return out
}
