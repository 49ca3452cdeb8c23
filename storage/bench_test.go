package storage

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/mount"
	flatfs "github.com/ipfs/go-ds-flatfs"
	leveldb "github.com/ipfs/go-ds-leveldb"
	pebbleds "github.com/ipfs/go-ds-pebble"
)

func bigModel(params int, seed uint64) Model {
	rng := rand.New(rand.NewPCG(seed, 0))
	p := make([]float32, params)
	for i := range p {
		p[i] = float32(rng.NormFloat64())
	}
	// One wide dense layer per 4M parameters keeps shards layer-bounded.
	var layers []Layer
	for left := params; left > 0; left -= 1 << 22 {
		n := min(left, 1<<22)
		layers = append(layers, Layer{Name: fmt.Sprintf("w%d", len(layers)), Shape: []int{n}})
	}
	return Model{Arch: "bench", Layers: layers, Params: p}
}

// BenchmarkCheckpoint measures checkpoint put and get throughput against
// sha256 over the same bytes, timed in the same run (the target is
// ≥ 0.25× sha256 for both).
func BenchmarkCheckpoint(b *testing.B) {
	for _, size := range []struct {
		name   string
		params int
	}{{"2nn-0.8MB", 199210}, {"100MB", 25 << 20}} {
		b.Run(size.name, func(b *testing.B) {
			ctx := context.Background()
			s := openStore(b)
			m := bigModel(size.params, 1)
			raw := float32Bytes(m.Params)
			b.SetBytes(int64(len(raw)))
			if _, err := s.PutCheckpoint(ctx, m, CheckpointMeta{Height: 1 << 40}); err != nil { // warm-up: memtable, caches
				b.Fatal(err)
			}
			var putT, getT, shaT time.Duration
			for i := 0; i < b.N; i++ {
				m.Params[0] = float32(i) // a fresh checkpoint each time (no dedupe)
				raw[0] = byte(i)
				t0 := time.Now()
				c, err := s.PutCheckpoint(ctx, m, CheckpointMeta{Height: uint64(i)})
				if err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if _, _, err := s.GetCheckpoint(ctx, c); err != nil {
					b.Fatal(err)
				}
				t2 := time.Now()
				sha256.Sum256(raw)
				putT, getT, shaT = putT+t1.Sub(t0), getT+t2.Sub(t1), shaT+time.Since(t2)
			}
			mb := float64(len(raw)*b.N) / 1e6
			b.ReportMetric(mb/putT.Seconds(), "put-MB/s")
			b.ReportMetric(mb/getT.Seconds(), "get-MB/s")
			b.ReportMetric(mb/shaT.Seconds(), "sha256-MB/s")
			b.ReportMetric(shaT.Seconds()/putT.Seconds(), "put/sha256")
			b.ReportMetric(shaT.Seconds()/getT.Seconds(), "get/sha256")
		})
	}
}

// float32Bytes is the little-endian encoding of a vector (a dense shard's
// payload): what sha256 and the one-file-per-checkpoint baseline see.
func float32Bytes(p []float32) []byte {
	b := make([]byte, 4*len(p))
	for i, v := range p {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}

// BenchmarkDedupe stores 100 checkpoints of a slowly changing 2NN (each
// round fine-tunes the output layer only, as when the feature layers are
// frozen) and reports bytes on disk against writing each checkpoint as its
// own file.
func BenchmarkDedupe(b *testing.B) {
	for i := 0; i < b.N; i++ {
		dir := b.TempDir()
		s, err := Open(filepath.Join(dir, "store"))
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		m := model(1)
		rng := rand.New(rand.NewPCG(2, 2))
		files := filepath.Join(dir, "files")
		_ = os.MkdirAll(files, 0o755)
		for h := range 100 {
			for j := 197200; j < len(m.Params); j++ { // fc3.weight and fc3.bias
				m.Params[j] += float32(0.001 * rng.NormFloat64())
			}
			if _, err := s.PutCheckpoint(ctx, m, CheckpointMeta{Height: uint64(h)}); err != nil {
				b.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(files, fmt.Sprint(h)), float32Bytes(m.Params), 0o644); err != nil {
				b.Fatal(err)
			}
		}
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		with, without := dirBytes(b, filepath.Join(dir, "store")), dirBytes(b, files)
		b.ReportMetric(float64(with)/1e6, "MB-dedupe")
		b.ReportMetric(float64(without)/1e6, "MB-files")
		b.ReportMetric(float64(with)/float64(without), "dedupe/files")
	}
}

func dirBytes(b *testing.B, dir string) int64 {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			info, _ := d.Info()
			n += info.Size()
		}
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// BenchmarkDatastore compares the three persistent datastores boxo can sit
// on, writing and re-reading 256 KiB shards with durable writes (see doc.go
// for the choice).
func BenchmarkDatastore(b *testing.B) {
	open := map[string]func(dir string) (ds.Batching, error){
		"pebble": func(dir string) (ds.Batching, error) { return pebbleds.NewDatastore(dir) },
		"leveldb": func(dir string) (ds.Batching, error) {
			return leveldb.NewDatastore(dir, nil)
		},
		// As kubo mounts it: blocks in flatfs, everything else in pebble.
		"flatfs": func(dir string) (ds.Batching, error) {
			blocks, err := flatfs.CreateOrOpen(filepath.Join(dir, "blocks"), flatfs.NextToLast(2), true)
			if err != nil {
				return nil, err
			}
			meta, err := pebbleds.NewDatastore(filepath.Join(dir, "meta"))
			if err != nil {
				return nil, err
			}
			return mount.New([]mount.Mount{{Prefix: ds.NewKey("/blocks"), Datastore: blocks}, {Prefix: ds.NewKey("/"), Datastore: meta}}), nil
		},
	}
	names := []string{"pebble", "leveldb", "flatfs"}
	for _, name := range names {
		b.Run(name, func(b *testing.B) {
			d, err := open[name](b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			defer d.Close()
			s := NewStore(d, nil)
			ctx := context.Background()
			m := model(1)
			b.SetBytes(int64(4 * len(m.Params)))
			for i := 0; i < b.N; i++ {
				m.Params[i%len(m.Params)] += 1 // new content each time
				c, err := s.PutCheckpoint(ctx, m, CheckpointMeta{Height: uint64(i)})
				if err != nil {
					b.Fatal(err)
				}
				if err := d.Sync(ctx, ds.NewKey("/")); err != nil {
					b.Fatal(err)
				}
				if _, _, err := s.GetCheckpoint(ctx, c); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
