// Package ledger keeps the decided heights of a network as a hash chain on
// disk: each entry is a commit (the decided value and its certificate) plus
// the hash of the previous entry, so the whole lineage verifies from
// genesis with nothing but the validator set.
//
// It is the consensus shell's persistent record (I/O, one owner goroutine);
// the file format is the write-ahead log's (length, CRC-32C, payload), so a
// torn last entry is repaired the same way.
package ledger

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/murmur-ml/murmur/consensus"
	"github.com/murmur-ml/murmur/consensus/wal"
)

// ErrChain reports an entry that does not extend the chain: a wrong height,
// a wrong previous hash, or a certificate that does not verify.
var ErrChain = errors.New("ledger: broken chain")

// Genesis is the previous-hash of height 1: the hash of the network name,
// so that ledgers of different networks never share a prefix.
func Genesis(network string) [32]byte {
	return sha256.Sum256([]byte("murmur/genesis/v1\x00" + network))
}

// Entry is one decided height.
type Entry struct {
	Prev   [32]byte
	Commit consensus.Commit
}

// Height is the entry's height.
func (e Entry) Height() uint64 { return e.Commit.Certificate.Height }

// Hash chains the entry: it covers the previous hash, the height, the value
// and the certificate.
func (e Entry) Hash() [32]byte {
	h := sha256.New()
	h.Write(e.Prev[:])
	h.Write(binary.BigEndian.AppendUint64(nil, e.Height()))
	h.Write(consensus.Encode(&e.Commit))
	var out [32]byte
	h.Sum(out[:0])
	return out
}

func (e Entry) encode() []byte { return append(e.Prev[:], consensus.Encode(&e.Commit)...) }

func decode(b []byte) (Entry, error) {
	if len(b) < 32 {
		return Entry{}, fmt.Errorf("%w: entry of %d bytes", ErrChain, len(b))
	}
	var e Entry
	copy(e.Prev[:], b)
	msg, err := consensus.Decode(b[32:])
	if err != nil {
		return Entry{}, err
	}
	c, ok := msg.(*consensus.Commit)
	if !ok {
		return Entry{}, fmt.Errorf("%w: entry holds a %T", ErrChain, msg)
	}
	e.Commit = *c
	return e, nil
}

// Ledger is an open, verified chain.
type Ledger struct {
	network string
	vals    *consensus.ValidatorSet
	ver     consensus.Verifier
	w       *wal.WAL
	entries []Entry
	head    [32]byte
}

// Open reads and verifies the ledger at path (creating it if absent).
func Open(path, network string, vals *consensus.ValidatorSet, ver consensus.Verifier) (*Ledger, error) {
	w, recs, _, err := wal.Open(path)
	if err != nil {
		return nil, err
	}
	l := &Ledger{network: network, vals: vals, ver: ver, w: w, head: Genesis(network)}
	for i, r := range recs {
		e, err := decode(r)
		if err == nil {
			err = l.check(e)
		}
		if err != nil {
			w.Close()
			return nil, fmt.Errorf("%s: entry %d: %w", path, i+1, err)
		}
		l.entries = append(l.entries, e)
		l.head = e.Hash()
	}
	return l, nil
}

func (l *Ledger) check(e Entry) error {
	if want := uint64(len(l.entries)) + 1; e.Height() != want {
		return fmt.Errorf("%w: height %d where %d belongs", ErrChain, e.Height(), want)
	}
	if e.Prev != l.head {
		return fmt.Errorf("%w: height %d does not link to the entry before it", ErrChain, e.Height())
	}
	if consensus.HashOf(e.Commit.Value) != e.Commit.Certificate.Value {
		return fmt.Errorf("%w: height %d: value does not match its certificate", ErrChain, e.Height())
	}
	if err := e.Commit.Certificate.Verify(l.network, l.vals, l.ver); err != nil {
		return fmt.Errorf("%w: height %d: %w", ErrChain, e.Height(), err)
	}
	return nil
}

// Append verifies a commit for the next height, links it and makes it
// durable before returning.
func (l *Ledger) Append(c consensus.Commit) error {
	e := Entry{Prev: l.head, Commit: c}
	if err := l.check(e); err != nil {
		return err
	}
	if err := l.w.Append(e.encode()); err != nil {
		return err
	}
	if err := l.w.Sync(); err != nil {
		return err
	}
	l.entries = append(l.entries, e)
	l.head = e.Hash()
	return nil
}

// Height is the last decided height (0 for an empty ledger).
func (l *Ledger) Height() uint64 { return uint64(len(l.entries)) }

// Head is the hash of the last entry (the genesis hash if empty).
func (l *Ledger) Head() [32]byte { return l.head }

// Commit returns the commit of height h (1-based).
func (l *Ledger) Commit(h uint64) (consensus.Commit, bool) {
	if h == 0 || h > uint64(len(l.entries)) {
		return consensus.Commit{}, false
	}
	return l.entries[h-1].Commit, true
}

// Close closes the file.
func (l *Ledger) Close() error { return l.w.Close() }
