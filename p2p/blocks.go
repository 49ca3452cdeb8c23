package p2p

import (
	"context"
	"fmt"

	"github.com/ipfs/boxo/bitswap"
	"github.com/ipfs/boxo/bitswap/network/bsnet"
	"github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/routing"
)

// NewBitswap serves and fetches blocks of bs over h; providers of content
// are found through r (the network's DHT) when it is not nil.
func NewBitswap(ctx context.Context, h host.Host, r routing.ContentRouting, bs blockstore.Blockstore) *bitswap.Bitswap {
	net := bsnet.NewFromIpfsHost(h)
	var finder routing.ContentDiscovery
	if r != nil {
		finder = r
	}
	return bitswap.New(ctx, net, finder, bs)
}

// FetchDAG fetches root and everything reachable from it through links (the
// object's content links, from storage.Links) over bitswap, stores each
// block in bs once it is verified, and returns how many blocks it fetched.
// Bitswap re-hashes every block it receives against the CID it asked for.
func FetchDAG(ctx context.Context, bsw *bitswap.Bitswap, bs blockstore.Blockstore, root cid.Cid, links func(cid.Cid, []byte) ([]cid.Cid, error)) (int, error) {
	n := 0
	level := []cid.Cid{root}
	for len(level) > 0 {
		var want []cid.Cid
		for _, c := range level {
			if ok, err := bs.Has(ctx, c); err != nil {
				return n, err
			} else if !ok {
				want = append(want, c)
			}
		}
		ch, err := bsw.GetBlocks(ctx, want)
		if err != nil {
			return n, err
		}
		got := map[string]blocks.Block{}
		for blk := range ch {
			got[blk.Cid().KeyString()] = blk
		}
		if len(got) != len(want) {
			if err := ctx.Err(); err != nil {
				return n, err
			}
			return n, fmt.Errorf("p2p: fetched %d of %d blocks", len(got), len(want))
		}
		var batch []blocks.Block
		for _, c := range want {
			batch = append(batch, got[c.KeyString()])
		}
		if err := bs.PutMany(ctx, batch); err != nil {
			return n, err
		}
		n += len(batch)
		var next []cid.Cid
		for _, c := range level {
			blk, err := bs.Get(ctx, c)
			if err != nil {
				return n, err
			}
			children, err := links(c, blk.RawData())
			if err != nil {
				return n, err
			}
			next = append(next, children...)
		}
		level = next
	}
	return n, nil
}
