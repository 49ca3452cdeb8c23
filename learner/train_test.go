package learner

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestTrainConfigValidate(t *testing.T) {
	mod := func(f func(*TrainConfig)) TrainConfig { c := DefaultTrainConfig(); f(&c); return c }
	bad := map[string]TrainConfig{
		"no epochs":    mod(func(c *TrainConfig) { c.Epochs = 0 }),
		"batch 0":      mod(func(c *TrainConfig) { c.BatchSize = 0 }),
		"lr 0":         mod(func(c *TrainConfig) { c.LR = 0 }),
		"lr NaN":       mod(func(c *TrainConfig) { c.LR = math.NaN() }),
		"momentum 1":   mod(func(c *TrainConfig) { c.Momentum = 1 }),
		"decay < 0":    mod(func(c *TrainConfig) { c.WeightDecay = -1 }),
		"val 1":        mod(func(c *TrainConfig) { c.ValFraction = 1 }),
		"schedule":     mod(func(c *TrainConfig) { c.Schedule = "linear" }),
		"patience < 0": mod(func(c *TrainConfig) { c.Patience = -1 }),
	}
	for name, c := range bad {
		if err := c.Validate(); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
	if err := DefaultTrainConfig().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestTrainLearnsSynthetic(t *testing.T) {
	for _, arch := range []string{Arch2NN, ArchCNN} {
		t.Run(arch, func(t *testing.T) {
			seed := uint64(5)
			t.Logf("seed %d", seed)
			rng := rand.New(rand.NewPCG(seed, 0))
			data := Synthetic(600, rng)
			test := Synthetic(200, rand.New(rand.NewPCG(seed, 0))) // same prototypes: same rng start
			m, err := NewModel(arch, rng)
			if err != nil {
				t.Fatal(err)
			}
			before, _ := Evaluate(m, test)
			cfg := DefaultTrainConfig()
			cfg.Epochs, cfg.LR, cfg.BatchSize = 2, 0.01, 32
			if arch == ArchCNN {
				cfg.Epochs = 4
			}
			if _, err := Train(m, data, cfg, rng); err != nil {
				t.Fatal(err)
			}
			after, _ := Evaluate(m, test)
			t.Logf("%s accuracy %.3f → %.3f, loss %.3f → %.3f", arch, before.Accuracy, after.Accuracy, before.Loss, after.Loss)
			if after.Accuracy < 0.9 || after.Loss >= before.Loss {
				t.Fatalf("did not learn: accuracy %.3f, loss %.3f → %.3f", after.Accuracy, before.Loss, after.Loss)
			}
		})
	}
}

func TestTrainSameSeedSameWeights(t *testing.T) {
	data := Synthetic(300, rand.New(rand.NewPCG(9, 9)))
	run := func(seed uint64) []float32 {
		rng := rand.New(rand.NewPCG(seed, 0))
		m, _ := NewModel(Arch2NN, rng)
		cfg := DefaultTrainConfig()
		cfg.Steps = 6
		if _, err := Train(m, data, cfg, rng); err != nil {
			t.Fatal(err)
		}
		return m.Params
	}
	a, b, c := run(1), run(1), run(2)
	if !slices.Equal(a, b) {
		t.Fatal("same seed gave different weights")
	}
	if slices.Equal(a, c) {
		t.Fatal("different seeds gave the same weights")
	}
}

func TestEarlyStoppingRestoresBest(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 0))
	// Random labels: the model can only memorise, so validation loss must
	// start rising and stop the run early.
	data := Synthetic(400, rng)
	for i := range data.Labels {
		data.Labels[i] = uint8(rng.IntN(NumClasses))
	}
	m, _ := NewModel(Arch2NN, rng)
	cfg := DefaultTrainConfig()
	cfg.Epochs, cfg.ValFraction, cfg.Patience, cfg.LR = 30, 0.25, 1, 0.01
	st, err := Train(m, data, cfg, rng)
	if err != nil {
		t.Fatal(err)
	}
	if st.StoppedAt == 0 || st.StoppedAt >= 30 || math.IsNaN(st.ValLoss) {
		t.Fatalf("early stopping did not fire: %+v", st)
	}
}

func TestTrainRejectsDivergence(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 0))
	data := Synthetic(200, rng)
	m, _ := NewModel(Arch2NN, rng)
	cfg := DefaultTrainConfig()
	cfg.LR = 1e6
	if _, err := Train(m, data, cfg, rng); err == nil {
		t.Fatal("a diverging run reported success")
	}
}

func TestModelValidate(t *testing.T) {
	m, _ := NewModel(Arch2NN, rand.New(rand.NewPCG(1, 0)))
	if len(m.Params) != 199210 {
		t.Fatalf("2NN has %d parameters, the FedAvg paper says 199,210", len(m.Params))
	}
	if _, err := NewModel("resnet", rand.New(rand.NewPCG(1, 0))); err == nil {
		t.Fatal("unknown architecture accepted")
	}
	short := &Model{Arch: m.Arch, Params: m.Params[:10]}
	if err := short.Validate(); err == nil {
		t.Fatal("short vector accepted")
	}
	m.Params[3] = float32(math.NaN())
	if err := m.Validate(); err == nil {
		t.Fatal("NaN accepted")
	}
}
