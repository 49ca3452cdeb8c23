package shard

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// topKReference is the definition topK must meet: a stable sort by
// descending magnitude (NaN last), the first k, in index order.
func topKReference(values []float32, k int) []int {
	idx := make([]int, len(values))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		return cmp.Compare(math.Abs(float64(values[b])), math.Abs(float64(values[a])))
	})
	idx = idx[:k]
	slices.Sort(idx)
	return idx
}

func TestTopKMatchesStableSort(t *testing.T) {
	seed := uint64(7)
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	for trial := range 300 {
		n := 1 + rng.IntN(400)
		vals := make([]float32, n)
		for i := range vals {
			switch rng.IntN(6) {
			case 0: // ties, of both signs
				vals[i] = float32(rng.IntN(3)-1) * 0.5
			case 1:
				vals[i] = 0
			case 2:
				if trial%5 == 0 {
					vals[i] = float32(math.NaN())
				} else {
					vals[i] = float32(math.Inf(1 - 2*rng.IntN(2)))
				}
			default:
				vals[i] = float32(rng.NormFloat64())
			}
		}
		k := 1 + rng.IntN(n)
		if got, want := topK(vals, k), topKReference(vals, k); !slices.Equal(got, want) {
			t.Fatalf("trial %d (n %d, k %d): %v, want %v (values %v)", trial, n, k, got, want, vals)
		}
	}
}

// BenchmarkTopK: selecting 1% of a 2NN-sized update, against the stable
// sort it replaced (same run, same input).
func BenchmarkTopK(b *testing.B) {
	vals := randVec(199210, 3)
	k := len(vals) / 100
	b.Run("select", func(b *testing.B) {
		for b.Loop() {
			topK(vals, k)
		}
	})
	b.Run("stable-sort", func(b *testing.B) {
		for b.Loop() {
			topKReference(vals, k)
		}
	})
}
