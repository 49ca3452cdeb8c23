package learner

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestPrivatize(t *testing.T) {
	delta := make([]float32, 20000)
	for i := range delta {
		delta[i] = 1
	}
	seed := [32]byte{1}
	cfg := DPConfig{Clip: 2, Sigma: 0.5}
	a, err := Privatize(delta, cfg, NewNoiseRand(&seed))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Privatize(delta, cfg, NewNoiseRand(&seed))
	if !slices.Equal(a, b) {
		t.Fatal("same seed, different noise")
	}
	c, _ := Privatize(delta, cfg, NewNoiseRand(nil))
	if slices.Equal(a, c) {
		t.Fatal("crypto-seeded noise equals the fixed seed's")
	}
	// Clipped signal: each coordinate 2/√20000; noise std σC = 1.
	signal := 2 / math.Sqrt(20000)
	var sum, sq float64
	for _, v := range a {
		n := float64(v) - signal
		sum += n
		sq += n * n
	}
	mean, std := sum/float64(len(a)), math.Sqrt(sq/float64(len(a)))
	if math.Abs(mean) > 0.03 || math.Abs(std-1) > 0.03 {
		t.Fatalf("noise mean %.4f std %.4f, want 0 and 1", mean, std)
	}
	if _, err := Privatize(delta, DPConfig{Clip: 0, Sigma: 1}, NewNoiseRand(nil)); err == nil {
		t.Fatal("clip 0 accepted")
	}
}

func TestClipL2(t *testing.T) {
	x := []float32{3, 4}
	if got := ClipL2(x, 10); &got[0] != &x[0] {
		t.Fatal("a vector within the bound was copied")
	}
	got := ClipL2(x, 1)
	if math.Abs(L2Norm(got)-1) > 1e-6 || math.Abs(float64(got[0])-0.6) > 1e-6 {
		t.Fatalf("clipped to %v", got)
	}
}

// TestExampleNormsMatchSingleExampleGradients checks the per-example norm
// shortcut against the gradient of each example computed on its own.
func TestExampleNormsMatchSingleExampleGradients(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	data := Synthetic(5, rng)
	m, _ := NewModel(Arch2NN, rng)
	batchNet, err := newNet(m, 5, perExample)
	if err != nil {
		t.Fatal(err)
	}
	defer batchNet.Close()
	batchNet.load(data, []int{0, 1, 2, 3, 4})
	clear(batchNet.wBuf)
	for r := range 5 {
		batchNet.wBuf[r] = 1
	}
	if err := batchNet.run(); err != nil {
		t.Fatal(err)
	}
	norms := batchNet.exampleNorms()
	one, _ := newNet(m, 1, training)
	defer one.Close()
	for i := range 5 {
		one.load(data, []int{i})
		if err := one.run(); err != nil {
			t.Fatal(err)
		}
		var sq float64
		for l := range m.Arch.Layers {
			for _, g := range one.grad(l) {
				sq += float64(g) * float64(g)
			}
		}
		if want := math.Sqrt(sq); math.Abs(norms[i]-want) > 1e-4*want {
			t.Fatalf("example %d: shortcut norm %.6f, own gradient %.6f", i, norms[i], want)
		}
	}
}

func TestTrainDP(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	data := Synthetic(1000, rng)
	test := Synthetic(300, rand.New(rand.NewPCG(4, 4)))
	run := func() ([]float32, TrainStats) {
		m, _ := NewModel(Arch2NN, rand.New(rand.NewPCG(1, 1)))
		seed := [32]byte{3}
		cfg := DefaultTrainConfig()
		cfg.Epochs, cfg.BatchSize, cfg.LR = 3, 50, 0.05
		st, err := TrainDP(m, data, cfg, DPConfig{Clip: 1, Sigma: 1}, rand.New(rand.NewPCG(2, 2)), NewNoiseRand(&seed))
		if err != nil {
			t.Fatal(err)
		}
		ev, _ := Evaluate(m, test)
		if ev.Accuracy < 0.9 {
			t.Fatalf("DP-SGD accuracy %.3f on separable data", ev.Accuracy)
		}
		return m.Params, st
	}
	a, st := run()
	b, _ := run()
	if !slices.Equal(a, b) {
		t.Fatal("same seeds, different DP-SGD weights")
	}
	if st.SampleRate != 0.05 || st.Steps != 60 {
		t.Fatalf("q=%v steps=%d, want 0.05 and 60", st.SampleRate, st.Steps)
	}
	m, _ := NewModel(ArchCNN, rng)
	if _, err := TrainDP(m, data, DefaultTrainConfig(), DPConfig{Clip: 1, Sigma: 1}, rng, rng); err == nil {
		t.Fatal("DP-SGD on the CNN accepted")
	}
}
