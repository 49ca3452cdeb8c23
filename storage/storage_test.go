package storage

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/ipfs/go-cid"
	"github.com/ipld/go-ipld-prime/codec/dagcbor"
	"github.com/ipld/go-ipld-prime/node/basicnode"

	"github.com/murmur-ml/murmur/shard"
)

var layers2NN = []Layer{
	{"fc1.weight", []int{784, 200}}, {"fc1.bias", []int{200}},
	{"fc2.weight", []int{200, 200}}, {"fc2.bias", []int{200}},
	{"fc3.weight", []int{200, 10}}, {"fc3.bias", []int{10}},
}

func model(seed uint64) Model {
	rng := rand.New(rand.NewPCG(seed, 0))
	p := make([]float32, 199210)
	for i := range p {
		p[i] = float32(rng.NormFloat64() * 0.05)
	}
	return Model{Arch: "2nn", Layers: layers2NN, Params: p}
}

func openStore(t testing.TB) *Store {
	t.Helper()
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

type edSigner struct{ key ed25519.PrivateKey }

func (e edSigner) ID() string                      { return "ed25519-test" }
func (e edSigner) Sign(msg []byte) ([]byte, error) { return ed25519.Sign(e.key, msg), nil }

func countBlocks(t *testing.T, s *Store) int {
	ch, err := s.bs.AllKeysChan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for range ch {
		n++
	}
	return n
}

func TestCheckpointRoundTripAndDedupe(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	m := model(1)
	c1, err := s.PutCheckpoint(ctx, m, CheckpointMeta{Height: 1, Metrics: map[string]float64{"accuracy": 0.97}})
	if err != nil {
		t.Fatal(err)
	}
	if c1.Type() != cid.DagCBOR || c1.Prefix().Version != 1 {
		t.Fatalf("checkpoint CID %s", c1)
	}
	ck, back, err := s.GetCheckpoint(ctx, c1)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(back.Params, m.Params) || ck.Height != 1 || ck.Metrics["accuracy"] != 0.97 || len(ck.Shards) != 8 {
		t.Fatalf("round trip: %+v", ck)
	}
	// Same content ⇒ same CID.
	again, _ := s.PutCheckpoint(ctx, m, CheckpointMeta{Height: 1, Metrics: map[string]float64{"accuracy": 0.97}})
	if again != c1 {
		t.Fatal("same checkpoint, different CID")
	}
	before := countBlocks(t, s)
	// Change only the last layer: 7 of the 8 shards are shared.
	m2 := Model{Arch: m.Arch, Layers: m.Layers, Params: slices.Clone(m.Params)}
	m2.Params[len(m2.Params)-1] += 1
	if _, err := s.PutCheckpoint(ctx, m2, CheckpointMeta{Height: 2, Parent: c1}); err != nil {
		t.Fatal(err)
	}
	if added := countBlocks(t, s) - before; added != 2 { // one shard + one manifest
		t.Fatalf("second checkpoint added %d blocks, want 2", added)
	}
}

func TestUpdateSignedAndCompressed(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))
	pub := priv.Public().(ed25519.PublicKey)
	base, _ := s.PutCheckpoint(ctx, model(1), CheckpointMeta{})
	delta := model(2).Params
	for _, codec := range []shard.Codec{shard.Dense, shard.Int8, shard.TopK} {
		c, err := s.PutUpdate(ctx, UpdateInput{Network: "test", Height: 3, Base: base, Layers: layers2NN, Delta: delta,
			Samples: 600, Codec: codec, TopK: 0.01}, edSigner{priv})
		if err != nil {
			t.Fatal(err)
		}
		u, got, err := s.GetUpdate(ctx, c, layers2NN)
		if err != nil {
			t.Fatal(err)
		}
		msg, _ := SigningBytes(u)
		if !ed25519.Verify(pub, msg, u.Signature) || u.Codec != codec.String() || u.Samples != 600 {
			t.Fatalf("%v: signature or fields wrong: %+v", codec, u)
		}
		if codec == shard.Dense && !slices.Equal(got, delta) {
			t.Fatal("dense update changed")
		}
		// A tampered field breaks the signature.
		u.Height++
		msg, _ = SigningBytes(u)
		if ed25519.Verify(pub, msg, u.Signature) {
			t.Fatal("signature survives a changed height")
		}
	}
}

func TestCorruptBlockQuarantined(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	c, err := s.PutCheckpoint(ctx, model(1), CheckpointMeta{})
	if err != nil {
		t.Fatal(err)
	}
	ck, _, _ := s.GetCheckpoint(ctx, c)
	victim := ck.Shards[2].Link.Cid
	if err := s.ds.Put(ctx, blockKey(victim), []byte("bit rot")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.GetCheckpoint(ctx, c); !errors.Is(err, ErrCorruptBlock) {
		t.Fatalf("corrupt shard served: %v", err)
	}
	if _, err := s.Get(ctx, victim); !errors.Is(err, ErrNotFound) {
		t.Fatalf("quarantined block still served: %v", err)
	}
	q, _ := s.Quarantined(ctx)
	if len(q) != 1 {
		t.Fatalf("quarantine holds %v", q)
	}
}

func TestBadInput(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	good, c, _ := Encode(&Block{Kind: KindBlock, Version: FormatVersion, Network: "n", Height: 1,
		Base: Link{mustCID("a")}, Result: Link{mustCID("b")}, Rule: "mean"})
	wrong := mustCID("something else")
	if err := s.Put(ctx, wrong, good); !errors.Is(err, ErrMalformed) {
		t.Errorf("block under the wrong CID: %v", err)
	}
	if _, err := s.Get(ctx, c); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing CID: %v", err)
	}
	tests := map[string]struct {
		b    []byte
		want error
	}{
		"huge byte string":   {[]byte{0xa1, 0x64, 'k', 'i', 'n', 'd', 0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, ErrMalformed},
		"huge array":         {[]byte{0xa2, 0x64, 'k', 'i', 'n', 'd', 0x65, 'b', 'l', 'o', 'c', 'k', 0x67, 'u', 'p', 'd', 'a', 't', 'e', 's', 0x9b, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}, ErrMalformed},
		"unknown kind":       {mustEncodeMap(map[string]any{"kind": "tensorboard"}), ErrUnknownKind},
		"not cbor":           {[]byte("{\"kind\":\"block\"}"), ErrMalformed},
		"truncated":          {good[:len(good)-3], ErrMalformed},
		"trailing garbage":   {append(slices.Clone(good), 0), ErrMalformed},
		"unknown field":      {mustEncodeMap(map[string]any{"kind": "block", "version": 1, "evil": 1}), ErrMalformed},
		"non-canonical keys": {nonCanonical(t, good), ErrMalformed},
	}
	for name, tc := range tests {
		if _, err := Decode(tc.b); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
	if _, _, err := Encode(&Checkpoint{Kind: KindCheckpoint, Version: FormatVersion, Metrics: map[string]float64{"loss": nan()}}); !errors.Is(err, ErrMalformed) {
		t.Errorf("NaN metric encoded: %v", err)
	}
	unsorted := &Block{Kind: KindBlock, Version: FormatVersion, Base: Link{mustCID("a")}, Result: Link{mustCID("b")},
		Updates: []Link{{mustCID("b")}, {mustCID("a")}}}
	unsorted.Updates = SortLinks([]cid.Cid{mustCID("x"), mustCID("y")})
	slices.Reverse(unsorted.Updates)
	if _, _, err := Encode(unsorted); !errors.Is(err, ErrMalformed) {
		t.Errorf("unsorted updates encoded: %v", err)
	}
}

func nan() float64 { var z float64; return z / z }

func mustCID(s string) cid.Cid {
	c, err := cidOf(cid.Raw, []byte(s))
	if err != nil {
		panic(err)
	}
	return c
}

func mustEncodeMap(m map[string]any) []byte {
	b, err := encMode.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

// nonCanonical re-encodes a node with its keys in the wrong order.
func nonCanonical(t *testing.T, b []byte) []byte {
	var m map[string]any
	if err := decMode.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	em := encMode.EncOptions()
	em.Sort = 0 // no sorting: Go map order
	mode, _ := em.EncMode()
	for range 50 {
		out, _ := mode.Marshal(m)
		if !bytes.Equal(out, b) {
			return out
		}
	}
	t.Fatal("could not produce a non-canonical encoding")
	return nil
}

// TestDAGCBORInterop decodes every kind with go-ipld-prime's DAG-CBOR codec
// (what `ipfs dag get` uses) and re-encodes it: the bytes must not change.
func TestDAGCBORInterop(t *testing.T) {
	objs := []any{
		&Checkpoint{Kind: KindCheckpoint, Version: 1, Arch: "2nn", Layers: layers2NN, DType: "float32", Height: 7,
			Parent: &Link{mustCID("p")}, Shards: []ShardRef{{0, 0, 10, Link{mustCID("s")}}}, Metrics: map[string]float64{"accuracy": 0.5, "loss": 1}},
		&Update{Kind: KindUpdate, Version: 1, Network: "n", Height: 1, Base: Link{mustCID("b")}, Author: "12D3", Samples: 3,
			Codec: "int8", Clip: 1, Sigma: 0.5, Epsilon: 2.25, Shards: []ShardRef{{1, 5, 2, Link{mustCID("s")}}}, Signature: []byte{1, 2}},
		&Block{Kind: KindBlock, Version: 1, Network: "n", Height: 2, Base: Link{mustCID("a")}, Result: Link{mustCID("r")},
			Updates: SortLinks([]cid.Cid{mustCID("u1"), mustCID("u2")}), Rule: "trimmed-mean(β=0.3)", Proposer: "12D3", TimeMS: 1},
		&Certificate{Kind: KindCertificate, Version: 1, Block: Link{mustCID("blk")}, Height: 2, Round: 0, Votes: []Vote{{"v1", []byte{9}}}},
	}
	for _, o := range objs {
		b, _, err := Encode(o)
		if err != nil {
			t.Fatal(err)
		}
		nb := basicnode.Prototype.Any.NewBuilder()
		if err := dagcbor.Decode(nb, bytes.NewReader(b)); err != nil {
			t.Fatalf("%T: go-ipld-prime cannot read it: %v", o, err)
		}
		var out bytes.Buffer
		if err := dagcbor.Encode(nb.Build(), &out); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), b) {
			t.Fatalf("%T: go-ipld-prime re-encodes differently:\nours   %x\ntheirs %x", o, b, out.Bytes())
		}
		if _, err := Decode(b); err != nil {
			t.Fatalf("%T: %v", o, err)
		}
	}
}

func TestPinsRetentionGC(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	var cks []cid.Cid
	parent := cid.Undef
	for h := uint64(1); h <= 12; h++ {
		c, err := s.PutCheckpoint(ctx, model(h), CheckpointMeta{Height: h, Parent: parent})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Pin(ctx, c, h); err != nil {
			t.Fatal(err)
		}
		cks, parent = append(cks, c), c
	}
	// An unpinned stray block must go at the next GC.
	stray := mustCID("stray")
	if err := s.Put(ctx, stray, []byte("stray")); err != nil {
		t.Fatal(err)
	}
	dropped, err := s.ApplyRetention(ctx, Retention{KeepLast: 3, KeepEvery: 5})
	if err != nil {
		t.Fatal(err)
	}
	var heights []uint64
	for _, d := range dropped {
		heights = append(heights, d.Height)
	}
	if !slices.Equal(heights, []uint64{1, 2, 3, 4, 6, 7, 8, 9}) {
		t.Fatalf("retention dropped heights %v", heights)
	}
	removed, err := s.GC(ctx, Collection{})
	if err != nil {
		t.Fatal(err)
	}
	if removed != 8*9+1 { // 8 checkpoints × (8 shards + manifest) + the stray block
		t.Fatalf("GC removed %d blocks", removed)
	}
	for _, h := range []int{5, 10, 11, 12} {
		if _, _, err := s.GetCheckpoint(ctx, cks[h-1]); err != nil {
			t.Fatalf("kept checkpoint %d: %v", h, err)
		}
	}
	if _, _, err := s.GetCheckpoint(ctx, cks[0]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("collected checkpoint still readable: %v", err)
	}
	if err := s.Pin(ctx, cks[0], 1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("pinned a missing block: %v", err)
	}
}

func TestStorePersists(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := s.PutCheckpoint(ctx, model(1), CheckpointMeta{Height: 4})
	if err := s.Pin(ctx, c, 4); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, _, err := s.GetCheckpoint(ctx, c); err != nil {
		t.Fatal(err)
	}
	pins, _ := s.Pins(ctx)
	if len(pins) != 1 || pins[0].Root != c || pins[0].Height != 4 {
		t.Fatalf("pins after reopen: %v", pins)
	}
}

// GC prunes lineage: blocks below TensorsFrom keep the manifests of their
// updates and models but lose the tensors; later blocks keep theirs whole;
// an update no block lists stays while it is in flight and goes once old;
// kept (imported) roots and just-committed blocks stay; the hash chain of
// manifests stays readable.
func TestGCPrunesLineage(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	signer := edSigner{ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, 32))}
	small := func(seed uint64) Model { // one tensor of 4 KB: one shard
		m := model(seed)
		return Model{Arch: "t", Layers: []Layer{{Name: "w", Shape: []int{1024}}}, Params: m.Params[:1024]}
	}
	base, err := s.PutCheckpoint(ctx, small(0), CheckpointMeta{Height: 0})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Pin(ctx, base, 0); err != nil {
		t.Fatal(err)
	}
	update := func(h uint64, seed uint64, on cid.Cid) cid.Cid {
		u, err := s.PutUpdate(ctx, UpdateInput{Network: "n", Height: h, Base: on, Layers: []Layer{{Name: "w", Shape: []int{1024}}},
			Delta: small(seed).Params, Samples: 1, Codec: shard.Dense}, signer)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	var blocks []*Block
	var ups, results []cid.Cid
	head := base
	for h := uint64(1); h <= 6; h++ {
		u := update(h, 100+h, head)
		res, err := s.PutCheckpoint(ctx, small(h), CheckpointMeta{Height: h, Parent: head})
		if err != nil {
			t.Fatal(err)
		}
		b := &Block{Kind: KindBlock, Version: FormatVersion, Network: "n", Height: h, Base: Link{head}, Result: Link{res},
			Updates: []Link{{u}}, Rule: "mean", Proposer: "p"}
		if _, err := s.PutObject(ctx, b); err != nil {
			t.Fatal(err)
		}
		blocks, ups, results, head = append(blocks, b), append(ups, u), append(results, res), res
	}
	if err := s.Pin(ctx, head, 6); err != nil { // retention keeps the head
		t.Fatal(err)
	}
	stale := update(2, 7, results[0])    // trained, never listed, old
	inFlight := update(7, 8, head)       // announced for the next height
	imported := update(1, 9, results[0]) // imported by hand
	if err := s.Keep(ctx, imported); err != nil {
		t.Fatal(err)
	}
	late := &Block{Kind: KindBlock, Version: FormatVersion, Network: "n", Height: 7, Base: Link{head}, Result: Link{head},
		Updates: []Link{{inFlight}}, Rule: "mean", Proposer: "p"} // committed after the list was made
	lateCID, err := s.PutObject(ctx, late)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GC(ctx, Collection{Blocks: blocks, TensorsFrom: 5, InFlightFrom: 6}); err != nil {
		t.Fatal(err)
	}
	whole := func(c cid.Cid) bool {
		obj, err := s.GetObject(ctx, c)
		if err != nil {
			return false
		}
		content, _ := Links(obj)
		for _, l := range content {
			if ok, _ := s.Has(ctx, l); !ok {
				return false
			}
		}
		return true
	}
	has := func(c cid.Cid) bool { ok, _ := s.Has(ctx, c); return ok }
	for i, b := range blocks {
		_, bc, _ := Encode(b)
		wantWhole := b.Height >= 5
		switch {
		case !has(bc):
			t.Errorf("block %d collected", b.Height)
		case !has(ups[i]) || !has(results[i]):
			t.Errorf("height %d: the lineage manifests are gone", b.Height)
		case whole(ups[i]) != wantWhole:
			t.Errorf("height %d: update whole %v, want %v", b.Height, whole(ups[i]), wantWhole)
		case whole(results[i]) != (b.Height >= 4): // height 4's result is block 5's base
			t.Errorf("height %d: result whole %v", b.Height, whole(results[i]))
		}
	}
	if has(stale) {
		t.Error("an old update no block lists survived")
	}
	if !whole(inFlight) || !whole(imported) || !whole(base) || !has(lateCID) {
		t.Errorf("in flight %v, imported %v, genesis %v, late block %v: want all kept", whole(inFlight), whole(imported), whole(base), has(lateCID))
	}
	if _, _, err := s.GetUpdate(ctx, ups[0], []Layer{{Name: "w", Shape: []int{1024}}}); !errors.Is(err, ErrNotFound) {
		t.Errorf("reading a pruned update's tensors: %v, want ErrNotFound", err)
	}
}
