package learner

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// ErrConfig reports an invalid configuration value.
var ErrConfig = errors.New("config")

// ErrDiverged reports training whose loss became NaN or infinite (a learning
// rate too high, or a starting model already destroyed by an attack).
var ErrDiverged = errors.New("training diverged")

// Learning-rate schedules.
const (
	ScheduleConstant = "constant"
	ScheduleCosine   = "cosine" // cosine decay to 0 over the run
	ScheduleStep     = "step"   // ×0.1 at 50% and 75% of the run
)

// TrainConfig configures local training: mini-batch SGD with momentum,
// coupled L2 weight decay, a learning-rate schedule and optional early
// stopping on a held-out validation split.
type TrainConfig struct {
	Epochs      int     // passes over the local data (ignored when Steps > 0)
	Steps       int     // if > 0, train exactly this many mini-batches
	BatchSize   int     // samples per step (a peer with fewer uses them all)
	LR          float64 // peak learning rate
	Momentum    float64 // heavy-ball momentum in [0, 1)
	WeightDecay float64 // L2 coefficient added to the gradient
	Schedule    string  // constant, cosine or step
	ValFraction float64 // held-out share of the data for early stopping (0: off)
	Patience    int     // epochs without validation improvement before stopping
}

// DefaultTrainConfig is tuned for the 2NN on MNIST.
func DefaultTrainConfig() TrainConfig {
	return TrainConfig{
		Epochs: 1, BatchSize: 64, LR: 0.02, Momentum: 0.9, WeightDecay: 1e-4,
		Schedule: ScheduleConstant,
	}
}

// Validate reports the first invalid field.
func (c TrainConfig) Validate() error {
	switch {
	case c.Epochs < 1 && c.Steps < 1:
		return fmt.Errorf("%w: epochs %d and steps %d: one must be ≥ 1", ErrConfig, c.Epochs, c.Steps)
	case c.BatchSize < 1:
		return fmt.Errorf("%w: batch size %d must be ≥ 1", ErrConfig, c.BatchSize)
	case !(c.LR > 0) || math.IsInf(c.LR, 0):
		return fmt.Errorf("%w: learning rate %v must be > 0", ErrConfig, c.LR)
	case c.Momentum < 0 || c.Momentum >= 1:
		return fmt.Errorf("%w: momentum %v must be in [0,1)", ErrConfig, c.Momentum)
	case c.WeightDecay < 0:
		return fmt.Errorf("%w: weight decay %v must be ≥ 0", ErrConfig, c.WeightDecay)
	case c.ValFraction < 0 || c.ValFraction >= 1:
		return fmt.Errorf("%w: validation fraction %v must be in [0,1)", ErrConfig, c.ValFraction)
	case c.Patience < 0:
		return fmt.Errorf("%w: patience %d must be ≥ 0", ErrConfig, c.Patience)
	}
	switch c.Schedule {
	case ScheduleConstant, ScheduleCosine, ScheduleStep:
		return nil
	}
	return fmt.Errorf("%w: schedule %q (want constant, cosine or step)", ErrConfig, c.Schedule)
}

// lrAt is the learning rate at step t of total.
func (c TrainConfig) lrAt(t, total int) float64 {
	frac := float64(t) / float64(max(total, 1))
	switch c.Schedule {
	case ScheduleCosine:
		return c.LR * 0.5 * (1 + math.Cos(math.Pi*frac))
	case ScheduleStep:
		switch {
		case frac >= 0.75:
			return c.LR * 0.01
		case frac >= 0.5:
			return c.LR * 0.1
		}
	}
	return c.LR
}

// TrainStats summarises one call of Train.
type TrainStats struct {
	Steps     int
	Samples   int     // samples processed (steps × batch)
	Epochs    int     // epochs completed
	Loss      float64 // mean training loss over the last epoch
	ValLoss   float64 // best validation loss (NaN without validation)
	StoppedAt int     // epoch at which early stopping fired (0: it did not)
	// SampleRate is DP-SGD's Poisson sampling rate q (0 without DP): the
	// run composed Steps sampled Gaussian mechanisms at this rate.
	SampleRate float64
}

// Train runs mini-batch SGD on m in place. rng orders the batches (and
// splits off the validation set); nothing else is random, so the same rng
// state gives the same weights. Every sample is seen once per epoch (the
// last batch of an epoch may be short).
func Train(m *Model, data *Dataset, cfg TrainConfig, rng *rand.Rand) (TrainStats, error) {
	return train(m, data, cfg, nil, rng, nil)
}

// DPSGDCost is what one DP-SGD training of cfg on n samples costs the
// accountant: steps runs of the sampled Gaussian mechanism at rate q (the
// batch over n), as TrainDP runs them.
func DPSGDCost(cfg TrainConfig, n int) (q float64, steps int) {
	b := min(cfg.BatchSize, n)
	if cfg.Steps > 0 {
		return float64(b) / float64(n), cfg.Steps
	}
	return float64(b) / float64(n), max(cfg.Epochs, 1) * max(1, n/b)
}

// TrainDP runs DP-SGD (Abadi et al. 2016) on m in place: each step draws a
// Poisson sample of the data with rate q = BatchSize/n, clips every
// example's gradient to L2 norm dp.Clip, sums, adds N(0, (dp.Sigma·Clip)²)
// noise from noise, and divides by the expected batch size. Each step is one
// run of the sampled Gaussian mechanism: account TrainStats.Steps steps at
// TrainStats.SampleRate. Only the 2NN is supported (its per-example gradient
// norms come from one backward pass).
func TrainDP(m *Model, data *Dataset, cfg TrainConfig, dp DPConfig, rng, noise *rand.Rand) (TrainStats, error) {
	if err := dp.Validate(); err != nil {
		return TrainStats{ValLoss: math.NaN()}, err
	}
	if cfg.ValFraction > 0 {
		return TrainStats{ValLoss: math.NaN()}, fmt.Errorf("%w: early stopping reads the data outside the privacy accounting; DP-SGD runs without it", ErrConfig)
	}
	return train(m, data, cfg, &dp, rng, noise)
}

func train(m *Model, data *Dataset, cfg TrainConfig, dp *DPConfig, rng, noise *rand.Rand) (TrainStats, error) {
	st := TrainStats{ValLoss: math.NaN()}
	if err := cfg.Validate(); err != nil {
		return st, err
	}
	if data.N() == 0 {
		return st, fmt.Errorf("%w: no training samples", ErrDataset)
	}
	train, val := data, (*Dataset)(nil)
	if cfg.ValFraction > 0 && cfg.Patience > 0 {
		var err error
		if train, val, err = data.Split(cfg.ValFraction, rng); err != nil {
			return st, err
		}
		if val.N() == 0 || train.N() == 0 {
			train, val = data, nil
		}
	}
	n := train.N()
	batch := min(cfg.BatchSize, n)
	perEpoch := (n + batch - 1) / batch
	capacity, kind := batch, training
	if dp != nil {
		// Poisson batches: q = B/n, n/B steps an epoch; the graph holds up
		// to B + 4√B + 4 rows (a larger draw, with probability < 1e-4, is
		// cut there).
		st.SampleRate = float64(batch) / float64(n)
		perEpoch = max(1, n/batch)
		capacity, kind = min(n, batch+4*int(math.Sqrt(float64(batch)))+4), perExample
	}
	epochs, total := cfg.Epochs, cfg.Steps
	if cfg.Steps > 0 {
		epochs = (cfg.Steps + perEpoch - 1) / perEpoch
	} else {
		total = epochs * perEpoch
	}

	nt, err := newNet(m, capacity, kind)
	if err != nil {
		return st, err
	}
	defer nt.Close()
	off := m.Arch.Offsets()
	vel := make([]float32, len(m.Params))
	var best []float32
	bad := 0
	idx := make([]int, 0, capacity)
	for e := 0; e < epochs && st.Steps < total; e++ {
		var perm []int
		if dp == nil {
			perm = rng.Perm(n)
		}
		var sum float64
		var count int
		for b := 0; b < perEpoch && st.Steps < total; b++ {
			if dp == nil {
				idx = perm[b*batch : min((b+1)*batch, n)]
			} else {
				idx = idx[:0]
				for i := 0; i < n; i++ {
					if rng.Float64() < st.SampleRate && len(idx) < capacity {
						idx = append(idx, i)
					}
				}
			}
			nt.load(train, idx)
			var loss float64
			if dp != nil {
				if loss, err = nt.clipExamples(len(idx), dp.Clip, float64(batch)); err != nil {
					return st, err
				}
			}
			if err := nt.run(); err != nil {
				return st, err
			}
			if dp == nil {
				loss = float64(nt.loss())
			}
			sum += loss
			count++
			lr := float32(cfg.lrAt(st.Steps, total))
			mom, wd := float32(cfg.Momentum), float32(cfg.WeightDecay)
			var noiseStd float32
			if dp != nil {
				noiseStd = float32(dp.Sigma * dp.Clip / float64(batch))
			}
			for li := range m.Arch.Layers {
				g := nt.grad(li)
				w := m.Params[off[li]:off[li+1]]
				v := vel[off[li]:off[li+1]]
				for j := range w {
					gj := g[j]
					if noiseStd != 0 {
						gj += noiseStd * float32(noise.NormFloat64())
					}
					v[j] = mom*v[j] + gj + wd*w[j]
					w[j] -= lr * v[j]
				}
			}
			st.Steps++
			st.Samples += len(idx)
		}
		st.Epochs = e + 1
		st.Loss = sum / float64(max(count, 1))
		if math.IsNaN(st.Loss) || math.IsInf(st.Loss, 0) {
			return st, fmt.Errorf("%w: loss %v at epoch %d", ErrDiverged, st.Loss, e+1)
		}
		if val == nil {
			continue
		}
		ev, err := Evaluate(m, val)
		if err != nil {
			return st, err
		}
		if math.IsNaN(st.ValLoss) || ev.Loss < st.ValLoss {
			st.ValLoss, bad = ev.Loss, 0
			best = slices.Clone(m.Params)
		} else if bad++; bad >= cfg.Patience {
			st.StoppedAt = e + 1
			break
		}
	}
	if best != nil {
		copy(m.Params, best)
	}
	return st, nil
}

// Eval is a model's accuracy and mean cross-entropy on a dataset.
type Eval struct {
	Accuracy float64 `json:"accuracy"`
	Loss     float64 `json:"loss"`
	N        int     `json:"n"`
}

// evalBatch divides MNIST's 10,000 test images evenly; other sizes pad the
// last batch with zero rows that are not counted.
const evalBatch = 500

// Evaluate runs the model forward over all of d.
func Evaluate(m *Model, d *Dataset) (Eval, error) {
	if d.N() == 0 {
		return Eval{}, fmt.Errorf("%w: no evaluation samples", ErrDataset)
	}
	batch := min(evalBatch, d.N())
	nt, err := newNet(m, batch, forwardOnly)
	if err != nil {
		return Eval{}, err
	}
	defer nt.Close()
	correct := 0
	var loss float64
	idx := make([]int, 0, batch)
	for start := 0; start < d.N(); start += batch {
		idx = idx[:0]
		for i := start; i < min(start+batch, d.N()); i++ {
			idx = append(idx, i)
		}
		nt.load(d, idx)
		if err := nt.run(); err != nil {
			return Eval{}, err
		}
		lp := nt.logProbs()
		for r, i := range idx {
			row := lp[r*NumClasses : (r+1)*NumClasses]
			arg := 0
			for c := 1; c < NumClasses; c++ {
				if row[c] > row[arg] {
					arg = c
				}
			}
			if arg == int(d.Labels[i]) {
				correct++
			}
			loss -= float64(row[d.Labels[i]])
		}
	}
	return Eval{Accuracy: float64(correct) / float64(d.N()), Loss: loss / float64(d.N()), N: d.N()}, nil
}
