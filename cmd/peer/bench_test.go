package main

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/murmur-ml/murmur/learner"
	"github.com/murmur-ml/murmur/shard"
	"github.com/murmur-ml/murmur/storage"
)

// BenchmarkUpdateCompression stores a real 2NN update (one local epoch on
// 6,000 MNIST images from the initial model) with each codec and reports its
// bytes against dense float32 and its relative L2 reconstruction error.
func BenchmarkUpdateCompression(b *testing.B) {
	dir, err := learner.DefaultMNISTDir()
	if err != nil {
		b.Fatal(err)
	}
	train, _, err := learner.LoadMNIST(dir)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 0))
	base, _ := learner.NewModel(learner.Arch2NN, rng)
	local := base.Clone()
	idx := rng.Perm(train.N())[:6000]
	if _, err := learner.Train(local, train.Subset(idx), learner.DefaultTrainConfig(), rng); err != nil {
		b.Fatal(err)
	}
	delta := learner.Delta(local.Params, base.Params)
	layers := make([]storage.Layer, len(base.Arch.Layers))
	for i, l := range base.Arch.Layers {
		layers[i] = storage.Layer{Name: l.Name, Shape: l.Shape}
	}
	ctx := context.Background()
	var denseBytes int
	for _, codec := range []shard.Codec{shard.Dense, shard.Int8, shard.TopK} {
		b.Run(codec.String(), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				s, err := storage.Open(b.TempDir())
				if err != nil {
					b.Fatal(err)
				}
				c, err := s.PutUpdate(ctx, storage.UpdateInput{Network: "bench", Height: 1, Base: base0(b, s, base, layers),
					Layers: layers, Delta: delta, Samples: 6000, Codec: codec, TopK: 0.01}, benchSigner{})
				if err != nil {
					b.Fatal(err)
				}
				u, got, err := s.GetUpdate(ctx, c, layers)
				if err != nil {
					b.Fatal(err)
				}
				n := 0
				for _, r := range u.Shards {
					raw, _ := s.Get(ctx, r.Link.Cid)
					n += len(raw)
				}
				if codec == shard.Dense {
					denseBytes = n
				}
				var diff, norm float64
				for j := range delta {
					d := float64(got[j] - delta[j])
					diff += d * d
					norm += float64(delta[j]) * float64(delta[j])
				}
				b.ReportMetric(float64(n), "shard-bytes")
				b.ReportMetric(float64(n)/float64(denseBytes), "x-dense")
				b.ReportMetric(math.Sqrt(diff/norm), "rel-L2-error")
				s.Close()
			}
		})
	}
}

func base0(b *testing.B, s *storage.Store, m *learner.Model, layers []storage.Layer) cid.Cid {
	c, err := s.PutCheckpoint(context.Background(), storage.Model{Arch: m.Arch.Name, Layers: layers, Params: m.Params}, storage.CheckpointMeta{})
	if err != nil {
		b.Fatal(err)
	}
	return c
}

type benchSigner struct{}

func (benchSigner) ID() string                  { return "bench" }
func (benchSigner) Sign([]byte) ([]byte, error) { return []byte{0}, nil }
