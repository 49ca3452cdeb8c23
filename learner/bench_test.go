package learner

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// TestReferenceMLPLearns keeps the benchmark's baseline honest: the plain-Go
// MLP must learn as well as the gorgonia one does from the same start.
func TestReferenceMLPLearns(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 2))
	data := Synthetic(640, rng)
	m, _ := NewModel(Arch2NN, rng)
	ref := newRefMLP(m.Clone().Params, 64)
	first := refEpoch(ref, data, 64, rand.New(rand.NewPCG(1, 1)))
	last := refEpoch(ref, data, 64, rand.New(rand.NewPCG(1, 2)))
	cfg := DefaultTrainConfig()
	st, err := Train(m, data, cfg, rand.New(rand.NewPCG(1, 1)))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("reference loss %.4f → %.4f; gorgonia first epoch %.4f", first, last, st.Loss)
	if last >= first || last > 0.1 {
		t.Fatalf("reference MLP did not learn: %.4f → %.4f", first, last)
	}
	// Same start, same batches, same update rule: first-epoch losses agree.
	if d := first - st.Loss; d > 1e-3 || d < -1e-3 {
		t.Fatalf("first-epoch loss: reference %.5f, gorgonia %.5f", first, st.Loss)
	}
}

// BenchmarkTrainEpoch times one epoch of the 2NN over 6,400 samples with
// gorgonia and with the plain-Go reference, in the same run, and reports
// gorgonia's time as a multiple of the reference's (lower is better).
func BenchmarkTrainEpoch(b *testing.B) {
	data := Synthetic(6400, rand.New(rand.NewPCG(1, 1)))
	const batch = 64
	cfg := DefaultTrainConfig()
	var gor, ref time.Duration
	for i := 0; i < b.N; i++ {
		m, _ := NewModel(Arch2NN, rand.New(rand.NewPCG(1, 0)))
		r := newRefMLP(m.Clone().Params, batch)
		t0 := time.Now()
		if _, err := Train(m, data, cfg, rand.New(rand.NewPCG(1, 1))); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		refEpoch(r, data, batch, rand.New(rand.NewPCG(1, 1)))
		gor += t1.Sub(t0)
		ref += time.Since(t1)
	}
	b.ReportMetric(float64(data.N()*b.N)/gor.Seconds(), "gorgonia-samples/s")
	b.ReportMetric(float64(data.N()*b.N)/ref.Seconds(), "plain-go-samples/s")
	b.ReportMetric(gor.Seconds()/ref.Seconds(), "gorgonia/plain-go")
}

// BenchmarkAggregate times each rule against the number of updates and the
// model size, and reports its cost as a multiple of the weighted mean's on
// the same inputs, measured in the same run.
func BenchmarkAggregate(b *testing.B) {
	for _, dim := range []int{199210, 1 << 20} {
		for _, n := range []int{10, 30} {
			rng := rand.New(rand.NewPCG(uint64(n), uint64(dim)))
			in := make([]Update, n)
			for i := range in {
				d := make([]float32, dim)
				for j := range d {
					d[j] = float32(rng.NormFloat64())
				}
				in[i] = Update{ID: fmt.Sprintf("u%03d", i), Delta: d, Samples: 100 + i}
			}
			if _, err := Aggregate(AggConfig{Rule: RuleMean}, in); err != nil { // warm-up
				b.Fatal(err)
			}
			t0 := time.Now()
			const reps = 5
			for range reps {
				if _, err := Aggregate(AggConfig{Rule: RuleMean}, in); err != nil {
					b.Fatal(err)
				}
			}
			meanCost := time.Since(t0).Seconds() / reps
			for _, rule := range Rules {
				b.Run(fmt.Sprintf("rule=%s/n=%d/dim=%d", rule, n, dim), func(b *testing.B) {
					b.SetBytes(int64(4 * dim * n))
					for i := 0; i < b.N; i++ {
						if _, err := Aggregate(AggConfig{Rule: rule}, in); err != nil {
							b.Fatal(err)
						}
					}
					b.ReportMetric(b.Elapsed().Seconds()/float64(b.N)/meanCost, "x-mean")
				})
			}
		}
	}
}

// BenchmarkTrainOneStep is a peer's cheapest local work (one mini-batch, as
// in the simulator's scale scenario), reported against one step inside a
// longer run of the same benchmark: the ratio is what building the graph
// for every call costs (measured 1.39×: not what dominates).
func BenchmarkTrainOneStep(b *testing.B) {
	data := Synthetic(2000, rand.New(rand.NewPCG(1, 1)))
	m, _ := NewModel(Arch2NN, rand.New(rand.NewPCG(1, 0)))
	cfg := DefaultTrainConfig()
	cfg.Steps = 1
	t0 := time.Now()
	for b.Loop() {
		if _, err := Train(m.Clone(), data, cfg, rand.New(rand.NewPCG(1, 1))); err != nil {
			b.Fatal(err)
		}
	}
	one := time.Since(t0) / time.Duration(b.N)
	cfg.Steps = 31
	t1 := time.Now()
	if _, err := Train(m.Clone(), data, cfg, rand.New(rand.NewPCG(1, 1))); err != nil {
		b.Fatal(err)
	}
	perStep := time.Since(t1) / 31
	b.ReportMetric(one.Seconds()/perStep.Seconds(), "one-step-call/step-in-epoch")
}
