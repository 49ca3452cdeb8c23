package p2p

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// ErrDAG reports a malformed, unasked-for or incomplete DAG response.
var ErrDAG = errors.New("p2p: dag")

// DAG response limits, checked before anything is allocated.
const (
	MaxDAGBlocks     = 1024
	MaxDAGBlockBytes = 1 << 20
	maxCIDBytes      = 128
	dagTimeout       = 30 * time.Second
)

// LinkFunc lists the blocks a block links to (a DAG's content links).
type LinkFunc func(c cid.Cid, data []byte) ([]cid.Cid, error)

// DAGProtocol asks one peer for a whole DAG by its root: a validator
// fetching an update from the trainer that announced it. Bitswap would ask
// every connected peer for every block (and cancel with every peer after),
// which at a hundred peers costs more than the transfer; the author is
// known, so it is asked directly, and bitswap remains the fallback.
func DAGProtocol(network string) protocol.ID {
	return protocol.ID("/murmur/" + network + "/dag/1")
}

// ServeDAG answers DAG requests on h from bs: the root, then every block it
// links to, breadth first, each as (CID, bytes), then an empty CID. A DAG
// it does not hold entirely ends the stream early (the asker falls back).
func ServeDAG(h host.Host, netName string, bs blockstore.Blockstore, links LinkFunc) {
	h.SetStreamHandler(DAGProtocol(netName), func(s network.Stream) {
		defer s.Close()
		_ = s.SetDeadline(time.Now().Add(dagTimeout))
		br := bufio.NewReader(io.LimitReader(s, binary.MaxVarintLen64+maxCIDBytes))
		root, err := readCID(br)
		if err != nil {
			_ = s.Reset()
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), dagTimeout)
		defer cancel()
		bw := bufio.NewWriter(s)
		level, sent := []cid.Cid{root}, 0
		seen := map[string]bool{root.KeyString(): true}
		for len(level) > 0 {
			var next []cid.Cid
			for _, c := range level {
				blk, err := bs.Get(ctx, c)
				if err != nil || len(blk.RawData()) > MaxDAGBlockBytes || sent == MaxDAGBlocks {
					_ = bw.Flush()
					return
				}
				writeBlock(bw, c, blk.RawData())
				sent++
				children, err := links(c, blk.RawData())
				if err != nil {
					_ = bw.Flush()
					return
				}
				for _, l := range children {
					if !seen[l.KeyString()] { // a block linked twice is sent once
						seen[l.KeyString()] = true
						next = append(next, l)
					}
				}
			}
			level = next
		}
		_, _ = bw.Write([]byte{0}) // the end
		_ = bw.Flush()
	})
}

func writeBlock(w *bufio.Writer, c cid.Cid, data []byte) {
	cb := c.Bytes()
	_, _ = w.Write(binary.AppendUvarint(nil, uint64(len(cb))))
	_, _ = w.Write(cb)
	_, _ = w.Write(binary.AppendUvarint(nil, uint64(len(data))))
	_, _ = w.Write(data)
}

func readCID(br *bufio.Reader) (cid.Cid, error) {
	n, err := binary.ReadUvarint(br)
	if err != nil {
		return cid.Undef, fmt.Errorf("%w: %v", ErrDAG, err)
	}
	if n == 0 || n > maxCIDBytes {
		return cid.Undef, fmt.Errorf("%w: %d-byte CID", ErrDAG, n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(br, b); err != nil {
		return cid.Undef, fmt.Errorf("%w: %v", ErrDAG, err)
	}
	c, err := cid.Cast(b)
	if err != nil {
		return cid.Undef, fmt.Errorf("%w: %v", ErrDAG, err)
	}
	return c, nil
}

// FetchDAGFrom asks p for the DAG under root, checks every block against
// its CID and against the links of the blocks before it (nothing unasked
// for is taken), requires the whole DAG, and stores it in bs. It returns
// how many blocks, and how many bytes of them, it stored.
func FetchDAGFrom(ctx context.Context, h host.Host, p peer.ID, netName string, bs blockstore.Blockstore, root cid.Cid, links LinkFunc) (int, int, error) {
	ctx, cancel := context.WithTimeout(ctx, dagTimeout)
	defer cancel()
	s, err := h.NewStream(ctx, p, DAGProtocol(netName))
	if err != nil {
		return 0, 0, err
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	rb := root.Bytes()
	if _, err := s.Write(append(binary.AppendUvarint(nil, uint64(len(rb))), rb...)); err != nil {
		return 0, 0, err
	}
	if err := s.CloseWrite(); err != nil {
		return 0, 0, err
	}
	got, err := ReadDAG(bufio.NewReader(s), root, links)
	if err != nil {
		_ = s.Reset()
		return 0, 0, err
	}
	if err := bs.PutMany(ctx, got); err != nil {
		return 0, 0, err
	}
	size := 0
	for _, b := range got {
		size += len(b.RawData())
	}
	return len(got), size, nil
}

// ReadDAG decodes a DAG response for root: every block must be one the
// DAG so far links to (root first), hash to its CID and fit the limits, and
// the response must end only once nothing linked is missing.
func ReadDAG(br *bufio.Reader, root cid.Cid, links LinkFunc) ([]blocks.Block, error) {
	want := map[string]bool{root.KeyString(): true}
	missing := 1
	var out []blocks.Block
	for {
		n, err := binary.ReadUvarint(br)
		if err != nil {
			return nil, fmt.Errorf("%w: %v (%d of the DAG's blocks missing)", ErrDAG, err, missing)
		}
		if n == 0 {
			if missing > 0 {
				return nil, fmt.Errorf("%w: the response ended with %d linked blocks missing", ErrDAG, missing)
			}
			return out, nil
		}
		if n > maxCIDBytes {
			return nil, fmt.Errorf("%w: %d-byte CID", ErrDAG, n)
		}
		cb := make([]byte, n)
		if _, err := io.ReadFull(br, cb); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrDAG, err)
		}
		c, err := cid.Cast(cb)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrDAG, err)
		}
		if pending, ok := want[c.KeyString()]; !ok || !pending {
			return nil, fmt.Errorf("%w: block %s was not asked for", ErrDAG, c)
		}
		size, err := binary.ReadUvarint(br)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrDAG, err)
		}
		if size > MaxDAGBlockBytes {
			return nil, fmt.Errorf("%w: %d-byte block exceeds %d", ErrDAG, size, MaxDAGBlockBytes)
		}
		if len(out) == MaxDAGBlocks {
			return nil, fmt.Errorf("%w: more than %d blocks", ErrDAG, MaxDAGBlocks)
		}
		data := make([]byte, size)
		if _, err := io.ReadFull(br, data); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrDAG, err)
		}
		sum, err := c.Prefix().Sum(data)
		if err != nil || !sum.Equals(c) {
			return nil, fmt.Errorf("%w: block %s does not hash to its CID", ErrDAG, c)
		}
		blk, err := blocks.NewBlockWithCid(data, c)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrDAG, err)
		}
		want[c.KeyString()] = false
		missing--
		out = append(out, blk)
		children, err := links(c, data)
		if err != nil {
			return nil, fmt.Errorf("%w: block %s: %v", ErrDAG, c, err)
		}
		for _, l := range children {
			if _, seen := want[l.KeyString()]; !seen {
				want[l.KeyString()] = true
				missing++
			}
		}
	}
}
