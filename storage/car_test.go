package storage

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/ipfs/go-cid"
	carv2 "github.com/ipld/go-car/v2"
)

func exportChain(t *testing.T) (*Store, cid.Cid, []byte) {
	t.Helper()
	ctx := context.Background()
	s := openStore(t)
	c1, _ := s.PutCheckpoint(ctx, model(1), CheckpointMeta{Height: 1})
	c2, err := s.PutCheckpoint(ctx, model(2), CheckpointMeta{Height: 2, Parent: c1})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	n, err := s.ExportCAR(ctx, c2, &buf)
	if err != nil {
		t.Fatal(err)
	}
	if n != 18 { // two checkpoints × (manifest + 8 shards)
		t.Fatalf("exported %d blocks", n)
	}
	return s, c2, buf.Bytes()
}

func TestCARRoundTrip(t *testing.T) {
	ctx := context.Background()
	_, root, car := exportChain(t)
	// A standard CAR reader (go-car, as used by `ipfs dag import`) reads it
	// and every block hashes to its CID.
	br, err := carv2.NewBlockReader(bytes.NewReader(car))
	if err != nil {
		t.Fatal(err)
	}
	if len(br.Roots) != 1 || br.Roots[0] != root || br.Version != 1 {
		t.Fatalf("go-car sees roots %v version %d", br.Roots, br.Version)
	}
	n := 0
	for {
		blk, err := br.Next()
		if err != nil {
			break
		}
		sum, _ := blk.Cid().Prefix().Sum(blk.RawData())
		if !sum.Equals(blk.Cid()) {
			t.Fatalf("block %s does not hash to its CID", blk.Cid())
		}
		n++
	}
	if n != 18 {
		t.Fatalf("go-car read %d blocks", n)
	}
	fresh := openStore(t)
	roots, m, err := fresh.ImportCAR(ctx, bytes.NewReader(car))
	if err != nil || m != 18 || roots[0] != root {
		t.Fatalf("import: %v %d %v", roots, m, err)
	}
	ck, mod, err := fresh.GetCheckpoint(ctx, root)
	if err != nil || ck.Height != 2 || len(mod.Params) != 199210 {
		t.Fatalf("imported checkpoint: %v", err)
	}
}

func TestCARBadInputWritesNothing(t *testing.T) {
	ctx := context.Background()
	_, _, car := exportChain(t)
	tampered := bytes.Clone(car)
	tampered[len(tampered)-100] ^= 0xff // a byte inside the last block
	tests := map[string][]byte{
		"truncated": car[:len(car)-1000],
		"tampered":  tampered,
		"empty":     nil,
		"huge":      {0xff, 0xff, 0xff, 0xff, 0x0f},
		"garbage":   []byte("this is not a car file"),
	}
	for name, b := range tests {
		s := openStore(t)
		_, _, err := s.ImportCAR(ctx, bytes.NewReader(b))
		if !errors.Is(err, ErrCAR) {
			t.Errorf("%s: %v, want ErrCAR", name, err)
		}
		if n := countBlocks(t, s); n != 0 {
			t.Errorf("%s: %d blocks written", name, n)
		}
	}
}

func FuzzDecodeObject(f *testing.F) {
	for _, o := range []any{
		&Checkpoint{Kind: KindCheckpoint, Version: 1, Arch: "2nn", Layers: layers2NN, DType: "float32", Shards: []ShardRef{{0, 0, 1, Link{mustCID("s")}}}},
		&Certificate{Kind: KindCertificate, Version: 1, Block: Link{mustCID("b")}, Votes: []Vote{{"v", []byte{1}}}},
	} {
		b, _, _ := Encode(o)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		obj, err := Decode(b)
		if err != nil {
			return
		}
		again, _, err := Encode(obj)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("decoded object does not re-encode to its bytes: %v", err)
		}
	})
}

func FuzzReadCAR(f *testing.F) {
	s := openStore(f)
	c, _ := s.PutObject(context.Background(), &Certificate{Kind: KindCertificate, Version: 1, Block: Link{mustCID("b")}})
	var buf bytes.Buffer
	if _, err := s.ExportCAR(context.Background(), c, &buf); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		_, blks, err := ReadCAR(bytes.NewReader(b))
		if err != nil {
			return
		}
		for _, blk := range blks {
			sum, err := blk.Cid().Prefix().Sum(blk.RawData())
			if err != nil || !sum.Equals(blk.Cid()) {
				t.Fatalf("unverified block %s accepted", blk.Cid())
			}
		}
	})
}
