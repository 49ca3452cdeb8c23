package storage

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
)

// maxSection bounds one CAR section (CID + block) before it is read: a shard
// is at most 256 KiB and a manifest at most 1 MiB.
const maxSection = maxManifestBytes + 128

type carHeader struct {
	Roots   []Link `cbor:"roots"`
	Version int    `cbor:"version"`
}

// ExportCAR writes root and every block it links to as a CAR v1 stream,
// each block once, root first, and returns the number of blocks written.
// Content links (shards) must be present; lineage links (parents, bases,
// updates) are followed when the block is stored and skipped when
// retention has pruned it.
func (s *Store) ExportCAR(ctx context.Context, root cid.Cid, w io.Writer) (int, error) {
	hdr, err := encMode.Marshal(carHeader{Roots: []Link{{root}}, Version: 1})
	if err != nil {
		return 0, err
	}
	bw := bufio.NewWriter(w)
	if err := writeSection(bw, nil, hdr); err != nil {
		return 0, err
	}
	seen := map[string]bool{}
	n := 0
	queue := []cid.Cid{root}
	for len(queue) > 0 {
		c := queue[0]
		queue = queue[1:]
		if seen[c.KeyString()] {
			continue
		}
		seen[c.KeyString()] = true
		data, err := s.Get(ctx, c)
		if err != nil {
			return n, err
		}
		if err := writeSection(bw, c.Bytes(), data); err != nil {
			return n, err
		}
		n++
		if c.Type() != cid.DagCBOR {
			continue
		}
		obj, err := Decode(data)
		if err != nil {
			return n, fmt.Errorf("storage: export %s: %w", c, err)
		}
		content, lineage := Links(obj)
		queue = append(queue, content...)
		for _, l := range lineage {
			if ok, _ := s.Has(ctx, l); ok {
				queue = append(queue, l)
			}
		}
	}
	return n, bw.Flush()
}

func writeSection(w *bufio.Writer, c, data []byte) error {
	if _, err := w.Write(binary.AppendUvarint(nil, uint64(len(c)+len(data)))); err != nil {
		return err
	}
	if _, err := w.Write(c); err != nil {
		return err
	}
	_, err := w.Write(data)
	return err
}

// ErrCAR reports a CAR stream that cannot be imported.
var ErrCAR = errors.New("storage: bad CAR file")

// ReadCAR parses a CAR v1 stream completely, re-hashing every block, and
// returns its roots and blocks. Nothing is stored: callers see the whole
// file verified before a single block is written.
func ReadCAR(r io.Reader) ([]cid.Cid, []blocks.Block, error) {
	br := bufio.NewReader(r)
	hdr, err := readSection(br)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: header: %w", ErrCAR, err)
	}
	var h carHeader
	if err := decMode.Unmarshal(hdr, &h); err != nil {
		return nil, nil, fmt.Errorf("%w: header: %w", ErrCAR, err)
	}
	if h.Version != 1 {
		return nil, nil, fmt.Errorf("%w: version %d (only CAR v1 is read)", ErrCAR, h.Version)
	}
	roots := make([]cid.Cid, len(h.Roots))
	for i, l := range h.Roots {
		roots[i] = l.Cid
	}
	var out []blocks.Block
	for i := 0; ; i++ {
		sec, err := readSection(br)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%w: block %d: %w", ErrCAR, i, err)
		}
		n, c, err := cid.CidFromBytes(sec)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: block %d: %w", ErrCAR, i, err)
		}
		blk, err := verifiedBlock(c, sec[n:])
		if err != nil {
			return nil, nil, fmt.Errorf("%w: block %d: %w", ErrCAR, i, err)
		}
		out = append(out, blk)
	}
	return roots, out, nil
}

// readSection reads one varint-prefixed section; io.EOF only at a clean
// section boundary.
func readSection(br *bufio.Reader) ([]byte, error) {
	n, err := binary.ReadUvarint(br)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, fmt.Errorf("length: %w", err)
	}
	if n == 0 || n > maxSection {
		return nil, fmt.Errorf("section of %d bytes (limit %d)", n, maxSection)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(br, buf); err != nil {
		return nil, fmt.Errorf("truncated section of %d bytes: %w", n, io.ErrUnexpectedEOF)
	}
	return buf, nil
}

// ImportCAR verifies a whole CAR stream and then stores its blocks in one
// batch: a truncated or tampered file writes nothing.
func (s *Store) ImportCAR(ctx context.Context, r io.Reader) ([]cid.Cid, int, error) {
	roots, blks, err := ReadCAR(r)
	if err != nil {
		return nil, 0, err
	}
	s.gc.RLock()
	defer s.gc.RUnlock()
	if err := s.bs.PutMany(ctx, blks); err != nil {
		return nil, 0, err
	}
	return roots, len(blks), nil
}
