package learner

import (
	crand "crypto/rand"
	"fmt"
	"math"
	"math/rand/v2"
)

// NewNoiseRand returns the generator for DP noise: ChaCha8 (a CSPRNG) seeded
// with seed, or from crypto/rand when seed is nil. Production peers use nil,
// so nobody can reproduce and subtract their noise; the simulator passes a
// seed derived from the run's seed so that runs are reproducible.
func NewNoiseRand(seed *[32]byte) *rand.Rand {
	var s [32]byte
	if seed != nil {
		s = *seed
	} else if _, err := crand.Read(s[:]); err != nil {
		panic("learner: crypto/rand failed: " + err.Error()) // the OS has no entropy: nothing safe to do
	}
	return rand.New(rand.NewChaCha8(s))
}

// DPConfig is the differential-privacy setting of an update: clip to L2
// norm Clip, then add N(0, (Sigma·Clip)²) to every coordinate.
type DPConfig struct {
	Clip  float64 // C > 0
	Sigma float64 // noise multiplier σ ≥ 0
}

// Validate reports an unusable setting.
func (c DPConfig) Validate() error {
	if !(c.Clip > 0) || math.IsInf(c.Clip, 0) {
		return fmt.Errorf("%w: clip norm %v must be > 0", ErrPrivacy, c.Clip)
	}
	if c.Sigma < 0 || math.IsNaN(c.Sigma) || math.IsInf(c.Sigma, 0) {
		return fmt.Errorf("%w: noise multiplier %v must be ≥ 0", ErrPrivacy, c.Sigma)
	}
	return nil
}

// Privatize clips delta to L2 norm C and adds Gaussian noise of standard
// deviation σC from noise, returning a new vector. One record's influence on
// the update is then at most C, so each call is one run of the Gaussian
// mechanism with multiplier σ.
func Privatize(delta []float32, cfg DPConfig, noise *rand.Rand) ([]float32, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	clipped := ClipL2(delta, cfg.Clip)
	out := make([]float32, len(delta))
	std := cfg.Sigma * cfg.Clip
	for i, v := range clipped {
		out[i] = float32(float64(v) + std*noise.NormFloat64())
	}
	return out, nil
}

// Budget is one peer's privacy budget (ε, δ) and what it has spent. A peer
// asks CanSpend before it contributes and stops once the answer is no.
type Budget struct {
	Epsilon, Delta float64
	acct           *Accountant
}

// NewBudget makes an unspent budget.
func NewBudget(eps, delta float64) (*Budget, error) {
	if !(eps > 0) {
		return nil, fmt.Errorf("%w: budget ε %v must be > 0", ErrPrivacy, eps)
	}
	if !(delta > 0 && delta < 1) {
		return nil, fmt.Errorf("%w: budget δ %v must be in (0,1)", ErrPrivacy, delta)
	}
	return &Budget{Epsilon: eps, Delta: delta, acct: NewAccountant()}, nil
}

// Spent is the ε composed so far.
func (b *Budget) Spent() float64 {
	e, err := b.acct.Epsilon(b.Delta)
	if err != nil {
		panic("learner: budget δ validated at construction: " + err.Error())
	}
	return e
}

// After is the ε that would be spent after steps more runs at (σ, q).
func (b *Budget) After(sigma, q float64, steps int) (float64, error) {
	a := b.acct.clone()
	if err := a.Step(sigma, q, steps); err != nil {
		return 0, err
	}
	return a.Epsilon(b.Delta)
}

// CanSpend reports whether steps more runs at (σ, q) stay within ε.
func (b *Budget) CanSpend(sigma, q float64, steps int) bool {
	e, err := b.After(sigma, q, steps)
	return err == nil && e <= b.Epsilon
}

// Spend records steps runs at (σ, q), or refuses with ErrPrivacy if that
// would exceed the budget.
func (b *Budget) Spend(sigma, q float64, steps int) error {
	e, err := b.After(sigma, q, steps)
	if err != nil {
		return err
	}
	if e > b.Epsilon {
		return fmt.Errorf("%w: budget exhausted: spending would reach ε=%.3f > %.3f", ErrPrivacy, e, b.Epsilon)
	}
	return b.acct.Step(sigma, q, steps)
}
