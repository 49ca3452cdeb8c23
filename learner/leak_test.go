package learner

import (
	"math/rand/v2"
	"runtime"
	"testing"
)

// TestTrainingReleasesItsGraph: a training run's graph and tensors are
// garbage once it returns. gorgonia's finalizer on the tape machine, in a
// cycle with the graph, kept every CNN run's ~86 MB alive (a peer leaked
// that much per height).
func TestTrainingReleasesItsGraph(t *testing.T) {
	data := Synthetic(500, rand.New(rand.NewPCG(1, 1)))
	m, err := NewModel(ArchCNN, rand.New(rand.NewPCG(1, 0)))
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultTrainConfig()
	cfg.Steps = 1
	heap := func() uint64 {
		var ms runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	train := func() {
		if _, err := Train(m.Clone(), data, cfg, rand.New(rand.NewPCG(1, 1))); err != nil {
			t.Fatal(err)
		}
		if _, err := Evaluate(m, data); err != nil {
			t.Fatal(err)
		}
	}
	train() // warm up whatever gorgonia keeps once
	before := heap()
	for range 4 {
		train()
	}
	after := heap()
	t.Logf("heap in use: %d MB before, %d MB after 4 more trainings and evaluations", before>>20, after>>20)
	if after > before+40<<20 {
		t.Fatalf("the heap grew by %d MB over 4 trainings: graphs are not freed", (after-before)>>20)
	}
}
