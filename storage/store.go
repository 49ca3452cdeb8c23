package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/ipfs/boxo/blockstore"
	"github.com/ipfs/boxo/datastore/dshelp"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"
	leveldb "github.com/ipfs/go-ds-leveldb"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/syndtr/goleveldb/leveldb/opt"
)

// Datastore namespaces next to boxo's /blocks.
var (
	quarantineNS = ds.NewKey("/quarantine")
	pinsNS       = ds.NewKey("/pins")
	keptNS       = ds.NewKey("/kept")
)

// Store is a peer's content-addressed object store: a boxo blockstore that
// re-hashes every block it reads, on a LevelDB datastore under the peer's
// home (doc.go says why LevelDB). It is safe for concurrent use (LevelDB
// and the blockstore are).
type Store struct {
	ds  ds.Batching
	bs  blockstore.Blockstore
	log *slog.Logger
	// gc is held shared by writes of several blocks that only make sense
	// together (an object's shards, then its manifest) and exclusively by
	// GC, so that a collection never sees shards whose manifest is not
	// written yet and deletes them.
	gc sync.RWMutex
}

// Option configures Open.
type Option func(*options)

type options struct {
	log  *slog.Logger
	sync bool
}

// WithLogger sets where quarantines are reported (default: discarded).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithSync makes every write durable (fsync of the datastore's journal)
// before it returns. Off by default: a checkpoint is synced once, by Pin.
func WithSync(on bool) Option { return func(o *options) { o.sync = on } }

// Open opens (creating if needed) the store in dir.
func Open(dir string, opts ...Option) (*Store, error) {
	o := options{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, f := range opts {
		f(&o)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	d, err := leveldb.NewDatastore(filepath.Clean(dir), &leveldb.Options{
		// Shards are float32 that do not compress: compressing costs CPU on
		// every write and read for nothing.
		Compression: opt.NoCompression,
		// A checkpoint is a few MB written at once: buffer a few of them.
		WriteBuffer: 32 << 20,
		NoSync:      !o.sync,
	})
	if err != nil {
		return nil, fmt.Errorf("storage: opening %s: %w", dir, err)
	}
	return NewStore(d, o.log), nil
}

// NewStore wraps an already open datastore (tests, other backends).
func NewStore(d ds.Batching, log *slog.Logger) *Store {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	bs := &blockstore.ValidatingBlockstore{Blockstore: blockstore.NewBlockstore(d)}
	return &Store{ds: d, bs: bs, log: log}
}

// Close flushes and closes the datastore.
func (s *Store) Close() error {
	if err := s.ds.Sync(context.Background(), ds.NewKey("/")); err != nil {
		s.ds.Close()
		return fmt.Errorf("storage: sync: %w", err)
	}
	return s.ds.Close()
}

// Blockstore exposes the validating blockstore (for bitswap).
func (s *Store) Blockstore() blockstore.Blockstore { return s.bs }

// Put stores a block after checking that data hashes to c.
func (s *Store) Put(ctx context.Context, c cid.Cid, data []byte) error {
	blk, err := verifiedBlock(c, data)
	if err != nil {
		return err
	}
	return s.bs.Put(ctx, blk)
}

func verifiedBlock(c cid.Cid, data []byte) (blocks.Block, error) {
	sum, err := c.Prefix().Sum(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrMalformed, c, err)
	}
	if !sum.Equals(c) {
		return nil, fmt.Errorf("%w: bytes hash to %s, not %s", ErrMalformed, sum, c)
	}
	return blocks.NewBlockWithCid(data, c)
}

// Get returns a block's bytes, re-hashed. A block whose bytes no longer
// match its CID is moved to quarantine (kept for inspection, never served)
// and reported with ErrCorruptBlock.
func (s *Store) Get(ctx context.Context, c cid.Cid) ([]byte, error) {
	blk, err := s.bs.Get(ctx, c)
	switch {
	case err == nil:
		return blk.RawData(), nil
	case ipld.IsNotFound(err):
		return nil, fmt.Errorf("%w: %s", ErrNotFound, c)
	case errors.Is(err, blockstore.ErrHashMismatch):
		if qerr := s.quarantine(ctx, c); qerr != nil {
			return nil, fmt.Errorf("%w: %s (quarantine failed: %w)", ErrCorruptBlock, c, qerr)
		}
		s.log.Warn("corrupt block quarantined", "cid", c.String())
		return nil, fmt.Errorf("%w: %s does not hash to its CID; moved to quarantine", ErrCorruptBlock, c)
	}
	return nil, fmt.Errorf("storage: get %s: %w", c, err)
}

// Has reports whether the block is stored (without reading it).
func (s *Store) Has(ctx context.Context, c cid.Cid) (bool, error) { return s.bs.Has(ctx, c) }

func blockKey(c cid.Cid) ds.Key {
	return blockstore.BlockPrefix.Child(dshelp.MultihashToDsKey(c.Hash()))
}

func (s *Store) quarantine(ctx context.Context, c cid.Cid) error {
	k := blockKey(c)
	raw, err := s.ds.Get(ctx, k)
	if err != nil {
		return err
	}
	b, err := s.ds.Batch(ctx)
	if err != nil {
		return err
	}
	if err := b.Put(ctx, quarantineNS.Child(dshelp.MultihashToDsKey(c.Hash())), raw); err != nil {
		return err
	}
	if err := b.Delete(ctx, k); err != nil {
		return err
	}
	return b.Commit(ctx)
}

// Quarantined lists the keys of quarantined blocks.
func (s *Store) Quarantined(ctx context.Context) ([]string, error) {
	res, err := s.ds.Query(ctx, dsq.Query{Prefix: quarantineNS.String(), KeysOnly: true})
	if err != nil {
		return nil, err
	}
	entries, err := res.Rest()
	if err != nil {
		return nil, err
	}
	out := make([]string, len(entries))
	for i, e := range entries {
		out[i] = e.Key
	}
	return out, nil
}

// GetObject reads and decodes a manifest.
func (s *Store) GetObject(ctx context.Context, c cid.Cid) (any, error) {
	if c.Type() != cid.DagCBOR {
		return nil, fmt.Errorf("%w: %s is not a dag-cbor node", ErrUnknownKind, c)
	}
	b, err := s.Get(ctx, c)
	if err != nil {
		return nil, err
	}
	return Decode(b)
}

// PutObject encodes and stores a manifest.
func (s *Store) PutObject(ctx context.Context, obj any) (cid.Cid, error) {
	b, c, err := Encode(obj)
	if err != nil {
		return cid.Undef, err
	}
	return c, s.Put(ctx, c, b)
}
