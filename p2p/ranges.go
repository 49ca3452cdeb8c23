package p2p

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// ErrRange reports a malformed or oversized range response.
var ErrRange = errors.New("p2p: range")

// Range request limits: a response holds at most MaxRangeItems items of at
// most MaxRangeItemBytes each, so a reader never allocates more than it
// bounded first.
const (
	MaxRangeItems     = 64
	MaxRangeItemBytes = 2 << 20
	rangeTimeout      = 30 * time.Second
)

// RangeProtocol is the request/response protocol that serves runs of
// consecutive items by height (the ledger's commits) to a peer catching up:
// gossip only carries what is new, so history is asked for.
func RangeProtocol(network string) protocol.ID {
	return protocol.ID("/murmur/" + network + "/commits/1")
}

// RangeSource returns up to max items from height from on (fewer at the
// head; none if it has nothing from there).
type RangeSource func(from uint64, max int) [][]byte

// ServeRange answers range requests on h with src.
func ServeRange(h host.Host, netName string, src RangeSource) {
	h.SetStreamHandler(RangeProtocol(netName), func(s network.Stream) {
		defer s.Close()
		_ = s.SetDeadline(time.Now().Add(rangeTimeout))
		br := bufio.NewReader(io.LimitReader(s, 2*binary.MaxVarintLen64))
		from, err1 := binary.ReadUvarint(br)
		n, err2 := binary.ReadUvarint(br)
		if err1 != nil || err2 != nil || n == 0 || n > MaxRangeItems {
			_ = s.Reset()
			return
		}
		bw := bufio.NewWriter(s)
		for _, item := range src(from, int(n)) {
			if len(item) > MaxRangeItemBytes {
				break
			}
			_, _ = bw.Write(binary.AppendUvarint(nil, uint64(len(item))))
			_, _ = bw.Write(item)
		}
		_ = bw.Flush()
	})
}

// FetchRange asks p for up to n items from height from on.
func FetchRange(ctx context.Context, h host.Host, p peer.ID, network string, from uint64, n int) ([][]byte, error) {
	if n < 1 || n > MaxRangeItems {
		return nil, fmt.Errorf("%w: %d items asked (1..%d)", ErrRange, n, MaxRangeItems)
	}
	ctx, cancel := context.WithTimeout(ctx, rangeTimeout)
	defer cancel()
	s, err := h.NewStream(ctx, p, RangeProtocol(network))
	if err != nil {
		return nil, err
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	req := binary.AppendUvarint(binary.AppendUvarint(nil, from), uint64(n))
	if _, err := s.Write(req); err != nil {
		return nil, err
	}
	if err := s.CloseWrite(); err != nil {
		return nil, err
	}
	return ReadRange(bufio.NewReader(s), n)
}

// ReadRange decodes a range response of at most n items: each a uvarint
// length (≤ MaxRangeItemBytes, checked before allocating) and its bytes,
// until EOF.
func ReadRange(br *bufio.Reader, n int) ([][]byte, error) {
	var out [][]byte
	for len(out) < n {
		size, err := binary.ReadUvarint(br)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return out, fmt.Errorf("%w: %v", ErrRange, err)
		}
		if size > MaxRangeItemBytes {
			return out, fmt.Errorf("%w: %d-byte item exceeds %d", ErrRange, size, MaxRangeItemBytes)
		}
		item := make([]byte, size)
		if _, err := io.ReadFull(br, item); err != nil {
			return out, fmt.Errorf("%w: %v", ErrRange, err)
		}
		out = append(out, item)
	}
	return out, nil
}
