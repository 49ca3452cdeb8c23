package p2p

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	mh "github.com/multiformats/go-multihash"
)

// testDAG is a root (cbor-tagged, its data the children's CIDs, each
// length-prefixed) over raw leaves.
func testDAG(t testing.TB, leaves ...[]byte) (root blocks.Block, all []blocks.Block) {
	t.Helper()
	var data []byte
	for _, l := range leaves {
		blk := rawBlock(t, l)
		all = append(all, blk)
		data = binary.AppendUvarint(data, uint64(len(blk.Cid().Bytes())))
		data = append(data, blk.Cid().Bytes()...)
	}
	sum, err := mh.Sum(data, mh.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	root, err = blocks.NewBlockWithCid(data, cid.NewCidV1(cid.DagCBOR, sum))
	if err != nil {
		t.Fatal(err)
	}
	return root, append([]blocks.Block{root}, all...)
}

func rawBlock(t testing.TB, b []byte) blocks.Block {
	sum, err := mh.Sum(b, mh.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := blocks.NewBlockWithCid(b, cid.NewCidV1(cid.Raw, sum))
	if err != nil {
		t.Fatal(err)
	}
	return blk
}

// testLinks reads testDAG's roots.
func testLinks(c cid.Cid, data []byte) ([]cid.Cid, error) {
	if c.Type() != cid.DagCBOR {
		return nil, nil
	}
	var out []cid.Cid
	br := bufio.NewReader(bytes.NewReader(data))
	for {
		c, err := readCID(br)
		if err != nil {
			if br.Buffered() == 0 {
				return out, nil
			}
			return nil, err
		}
		out = append(out, c)
	}
}

func newBlockstore() blockstore.Blockstore {
	return blockstore.NewBlockstore(dssync.MutexWrap(ds.NewMapDatastore()))
}

func TestFetchDAGFrom(t *testing.T) {
	ctx := context.Background()
	a, b := connectedPair(t)
	src, dst := newBlockstore(), newBlockstore()
	root, all := testDAG(t, []byte("shard one"), bytes.Repeat([]byte{9}, 300_000), []byte("shard one"))
	if err := src.PutMany(ctx, all); err != nil {
		t.Fatal(err)
	}
	partial, partialAll := testDAG(t, []byte("kept"), []byte("lost"))
	if err := src.PutMany(ctx, partialAll[:2]); err != nil {
		t.Fatal(err)
	}
	ServeDAG(a, "t", src, testLinks)
	n, size, err := FetchDAGFrom(ctx, b, a.ID(), "t", dst, root.Cid(), testLinks)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 || size != len(all[0].RawData())+len("shard one")+300_000 { // the repeated leaf travels once
		t.Fatalf("stored %d blocks of %d bytes, want 3", n, size)
	}
	for _, blk := range all {
		if ok, _ := dst.Has(ctx, blk.Cid()); !ok {
			t.Fatalf("block %s missing after the fetch", blk.Cid())
		}
	}
	tests := []struct {
		name string
		root cid.Cid
		net  string
	}{
		{"a DAG the peer holds only part of", partial.Cid(), "t"},
		{"a root the peer does not hold", rawBlock(t, []byte("nobody")).Cid(), "t"},
		{"another network's protocol", root.Cid(), "other"},
	}
	for _, tc := range tests {
		if _, _, err := FetchDAGFrom(ctx, b, a.ID(), tc.net, newBlockstore(), tc.root, testLinks); err == nil {
			t.Fatalf("%s: fetched", tc.name)
		}
	}
}

// response encodes blocks as a server would, then the end marker.
func response(blks ...blocks.Block) []byte {
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	for _, b := range blks {
		writeBlock(w, b.Cid(), b.RawData())
	}
	_ = w.WriteByte(0)
	_ = w.Flush()
	return buf.Bytes()
}

func TestReadDAGRefuses(t *testing.T) {
	root, all := testDAG(t, []byte("a"), []byte("b"))
	forged := response(all...)
	forged[len(forged)-2] ^= 1 // the last leaf's last byte
	tests := []struct {
		name string
		resp []byte
	}{
		{"a block nobody asked for", response(root, all[1], rawBlock(t, []byte("extra")))},
		{"children before their parent", response(all[1], root, all[2])},
		{"a block that does not hash to its CID", forged},
		{"an end with a leaf missing", response(root, all[1])},
		{"a stream cut short", response(all...)[:10]},
		{"the same block twice", response(root, all[1], all[1], all[2])},
		{"an oversized block header", append(response(root)[:len(response(root))-1-len(root.RawData())-3], 0xff, 0xff, 0xff, 0x7f)},
	}
	for _, tc := range tests {
		if _, err := ReadDAG(bufio.NewReader(bytes.NewReader(tc.resp)), root.Cid(), testLinks); !errors.Is(err, ErrDAG) {
			t.Errorf("%s: %v, want ErrDAG", tc.name, err)
		}
	}
	if got, err := ReadDAG(bufio.NewReader(bytes.NewReader(response(all...))), root.Cid(), testLinks); err != nil || len(got) != 3 {
		t.Fatalf("a good response: %d blocks, %v", len(got), err)
	}
}

// FuzzReadDAG: any response bytes give the DAG's verified blocks or an
// ErrDAG error, never a panic; what decodes is never more than the input.
func FuzzReadDAG(f *testing.F) {
	root, all := testDAG(f, []byte("a"), []byte("b"))
	f.Add(response(all...))
	f.Add(response(root))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, data []byte) {
		blks, err := ReadDAG(bufio.NewReader(bytes.NewReader(data)), root.Cid(), testLinks)
		if err != nil {
			if !errors.Is(err, ErrDAG) {
				t.Fatalf("error %v is not ErrDAG", err)
			}
			return
		}
		total := 0
		for _, b := range blks {
			total += len(b.RawData())
		}
		if total > len(data) {
			t.Fatalf("%d block bytes from %d input bytes", total, len(data))
		}
	})
}
