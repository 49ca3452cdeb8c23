package learner

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
)

// ErrAggregate reports aggregation inputs or parameters that cannot give a
// result.
var ErrAggregate = errors.New("aggregate")

// Aggregation rule names, as the CLI and genesis spell them.
const (
	RuleMean         = "mean"          // FedAvg: mean weighted by sample count
	RuleMedian       = "median"        // coordinate-wise median
	RuleTrimmedMean  = "trimmed-mean"  // coordinate-wise β-trimmed mean
	RuleKrum         = "krum"          // Multi-Krum (f, m)
	RuleCenteredClip = "centered-clip" // centered clipping (τ, L iterations)
)

// Rules lists every rule name.
var Rules = []string{RuleMean, RuleMedian, RuleTrimmedMean, RuleKrum, RuleCenteredClip}

// Update is one peer's contribution to a round: the change it proposes to
// the base model and the number of samples it trained on. ID orders the
// inputs (the update's CID in the network), so it must be unique.
type Update struct {
	ID      string
	Delta   []float32
	Samples int
}

// AggConfig selects a rule and its parameters. Zero values pick the
// defaults documented on each field.
type AggConfig struct {
	Rule string
	// Trim is β of the trimmed mean: the fraction cut from each end of every
	// coordinate, in [0, 0.5). Default 0.2 when zero and the rule needs it.
	Trim float64
	// KrumF is the number of Byzantine inputs Multi-Krum tolerates (needs
	// n > 2f+2); 0 means the largest f that n allows. KrumM is how many of the
	// best-scored inputs are averaged; 0 means n − f.
	KrumF, KrumM int
	// ClipTau is centered clipping's radius; 0 means the median distance of
	// the inputs from the starting centre (the coordinate-wise median).
	// ClipIters is L, default 3.
	ClipTau   float64
	ClipIters int
	// ServerMomentum μ in [0, 1): the new model moves by the aggregate plus
	// μ times the previous height's step (ApplyMomentum). 0: plain FedAvg.
	ServerMomentum float64
	// NormBound, when > 0, first scales every update down to at most this L2
	// norm (Sun et al. 2019), whatever the rule.
	NormBound float64
	// MaxSamples, when > 0, caps the sample count each update claims (its
	// weight in the mean): a trainer cannot buy influence by claiming more
	// data than any peer holds. Applied before every rule, deterministically.
	MaxSamples int
}

// Validate checks the rule name and parameter ranges (not the input count,
// which only Aggregate knows).
func (c AggConfig) Validate() error {
	if !slices.Contains(Rules, c.Rule) {
		return fmt.Errorf("%w: unknown aggregator %q (want %s)", ErrConfig, c.Rule, strings.Join(Rules, ", "))
	}
	switch {
	case c.Trim < 0 || c.Trim >= 0.5 || math.IsNaN(c.Trim):
		return fmt.Errorf("%w: trimmed fraction %v must be in [0, 0.5)", ErrConfig, c.Trim)
	case c.ServerMomentum < 0 || c.ServerMomentum >= 1 || math.IsNaN(c.ServerMomentum):
		return fmt.Errorf("%w: server momentum %v must be in [0, 1)", ErrConfig, c.ServerMomentum)
	case c.KrumF < 0 || c.KrumM < 0:
		return fmt.Errorf("%w: krum f=%d m=%d must be ≥ 0", ErrConfig, c.KrumF, c.KrumM)
	case c.ClipTau < 0 || math.IsNaN(c.ClipTau) || c.ClipIters < 0:
		return fmt.Errorf("%w: centered clipping τ=%v L=%d must be ≥ 0", ErrConfig, c.ClipTau, c.ClipIters)
	case c.NormBound < 0 || math.IsNaN(c.NormBound):
		return fmt.Errorf("%w: norm bound %v must be ≥ 0", ErrConfig, c.NormBound)
	case c.MaxSamples < 0:
		return fmt.Errorf("%w: max samples %d must be ≥ 0", ErrConfig, c.MaxSamples)
	}
	return nil
}

// String renders the rule and its effective parameters for n inputs, as
// recorded in a block.
func (c AggConfig) String() string {
	s := c.Rule
	switch c.Rule {
	case RuleTrimmedMean:
		s += fmt.Sprintf("(β=%g)", c.trim())
	case RuleKrum:
		s += fmt.Sprintf("(f=%d,m=%d)", c.KrumF, c.KrumM)
	case RuleCenteredClip:
		s += fmt.Sprintf("(τ=%g,L=%d)", c.ClipTau, c.iters())
	}
	if c.NormBound > 0 {
		s += fmt.Sprintf("+normbound(%g)", c.NormBound)
	}
	if c.MaxSamples > 0 {
		s += fmt.Sprintf("+maxsamples(%d)", c.MaxSamples)
	}
	return s
}

func (c AggConfig) trim() float64 {
	if c.Trim == 0 {
		return 0.3
	}
	return c.Trim
}

func (c AggConfig) iters() int {
	if c.ClipIters == 0 {
		return 3
	}
	return c.ClipIters
}

// ValidateUpdate checks what every rule assumes of one input.
func ValidateUpdate(u Update, dim int) error {
	if len(u.Delta) != dim {
		return fmt.Errorf("%w: update %q has %d coordinates, want %d", ErrAggregate, u.ID, len(u.Delta), dim)
	}
	if u.Samples < 1 {
		return fmt.Errorf("%w: update %q claims %d samples", ErrAggregate, u.ID, u.Samples)
	}
	for i, v := range u.Delta {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("%w: update %q coordinate %d is %v", ErrAggregate, u.ID, i, v)
		}
	}
	return nil
}

// Aggregate combines the updates with the configured rule. The result is
// bit-identical whatever the order of ups and whatever GOMAXPROCS: inputs are
// sorted by ID, every reduction runs sequentially in that order in float64,
// and each output coordinate is rounded to float32 once.
func Aggregate(cfg AggConfig, ups []Update) ([]float32, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(ups) == 0 {
		return nil, fmt.Errorf("%w: no updates", ErrAggregate)
	}
	ups = slices.Clone(ups)
	slices.SortFunc(ups, func(a, b Update) int { return cmp.Compare(a.ID, b.ID) })
	dim := len(ups[0].Delta)
	for i, u := range ups {
		if i > 0 && u.ID == ups[i-1].ID {
			return nil, fmt.Errorf("%w: duplicate update %q", ErrAggregate, u.ID)
		}
		if err := ValidateUpdate(u, dim); err != nil {
			return nil, err
		}
	}
	if cfg.NormBound > 0 {
		for i := range ups {
			ups[i].Delta = ClipL2(ups[i].Delta, cfg.NormBound)
		}
	}
	if cfg.MaxSamples > 0 {
		for i := range ups {
			ups[i].Samples = min(ups[i].Samples, cfg.MaxSamples)
		}
	}
	n := len(ups)
	switch cfg.Rule {
	case RuleMean:
		return weightedMean(ups), nil
	case RuleMedian:
		return coordinateWise(ups, median), nil
	case RuleTrimmedMean:
		k := int(cfg.trim() * float64(n))
		return coordinateWise(ups, func(col []float32) float32 { return mean64(col[k : n-k]) }), nil
	case RuleKrum:
		return multiKrum(ups, cfg.KrumF, cfg.KrumM)
	case RuleCenteredClip:
		return centeredClip(ups, cfg.ClipTau, cfg.iters()), nil
	}
	panic("learner: rule passed Validate but has no implementation: " + cfg.Rule)
}

func weightedMean(ups []Update) []float32 {
	dim := len(ups[0].Delta)
	acc := make([]float64, dim)
	var total float64
	for _, u := range ups {
		w := float64(u.Samples)
		total += w
		for j, v := range u.Delta {
			acc[j] += w * float64(v)
		}
	}
	out := make([]float32, dim)
	for j := range out {
		out[j] = float32(acc[j] / total)
	}
	return out
}

func unweightedMean(ups []Update) []float32 {
	dim := len(ups[0].Delta)
	acc := make([]float64, dim)
	for _, u := range ups {
		for j, v := range u.Delta {
			acc[j] += float64(v)
		}
	}
	out := make([]float32, dim)
	for j := range out {
		out[j] = float32(acc[j] / float64(len(ups)))
	}
	return out
}

// coordinateWise applies f to each coordinate's values, sorted ascending.
func coordinateWise(ups []Update, f func(sorted []float32) float32) []float32 {
	dim := len(ups[0].Delta)
	out := make([]float32, dim)
	col := make([]float32, len(ups))
	for j := range out {
		for i, u := range ups {
			col[i] = u.Delta[j]
		}
		slices.Sort(col)
		out[j] = f(col)
	}
	return out
}

func median(sorted []float32) float32 {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return float32((float64(sorted[n/2-1]) + float64(sorted[n/2])) / 2)
}

func mean64(xs []float32) float32 {
	var s float64
	for _, x := range xs {
		s += float64(x)
	}
	return float32(s / float64(len(xs)))
}

// multiKrum scores each update by the sum of squared distances to its
// n−f−2 nearest neighbours and averages the m best (Blanchard et al. 2017,
// El Mhamdi et al. 2018). Ties go to the smaller ID.
func multiKrum(ups []Update, f, m int) ([]float32, error) {
	n := len(ups)
	if f == 0 {
		f = (n - 3) / 2
	}
	if n <= 2*f+2 {
		return nil, fmt.Errorf("%w: Multi-Krum with f=%d needs more than %d updates, got %d", ErrAggregate, f, 2*f+2, n)
	}
	if m == 0 {
		m = n - f
	}
	if m > n {
		return nil, fmt.Errorf("%w: Multi-Krum m=%d exceeds the %d updates", ErrAggregate, m, n)
	}
	d := make([][]float64, n)
	for i := range d {
		d[i] = make([]float64, n)
	}
	for i := range n {
		for k := i + 1; k < n; k++ {
			s := sqDist(ups[i].Delta, ups[k].Delta)
			d[i][k], d[k][i] = s, s
		}
	}
	type scored struct {
		i     int
		score float64
	}
	scores := make([]scored, n)
	near := make([]float64, 0, n-1)
	for i := range n {
		near = near[:0]
		for k := range n {
			if k != i {
				near = append(near, d[i][k])
			}
		}
		slices.Sort(near)
		var s float64
		for _, v := range near[:n-f-2] {
			s += v
		}
		scores[i] = scored{i, s}
	}
	slices.SortStableFunc(scores, func(a, b scored) int { return cmp.Compare(a.score, b.score) })
	chosen := make([]Update, 0, m)
	for _, s := range scores[:m] {
		chosen = append(chosen, ups[s.i])
	}
	slices.SortFunc(chosen, func(a, b Update) int { return cmp.Compare(a.ID, b.ID) })
	return unweightedMean(chosen), nil
}

// centeredClip starts from the coordinate-wise median and takes L steps
// v ← v + mean_i clip(x_i − v, τ) (Karimireddy et al. 2021), which bounds
// the pull of any one input to τ/n per step.
func centeredClip(ups []Update, tau float64, iters int) []float32 {
	dim := len(ups[0].Delta)
	v := coordinateWise(ups, median)
	if tau == 0 {
		dists := make([]float64, len(ups))
		for i, u := range ups {
			dists[i] = math.Sqrt(sqDist(u.Delta, v))
		}
		slices.Sort(dists)
		if n := len(dists); n%2 == 1 {
			tau = dists[n/2]
		} else {
			tau = (dists[n/2-1] + dists[n/2]) / 2
		}
	}
	acc := make([]float64, dim)
	for range iters {
		clear(acc)
		for _, u := range ups {
			dist := math.Sqrt(sqDist(u.Delta, v))
			scale := 1.0
			if dist > tau {
				scale = tau / dist
			}
			for j, x := range u.Delta {
				acc[j] += scale * (float64(x) - float64(v[j]))
			}
		}
		for j := range v {
			v[j] = float32(float64(v[j]) + acc[j]/float64(len(ups)))
		}
	}
	return v
}

func sqDist(a, b []float32) float64 {
	var s float64
	for j := range a {
		d := float64(a[j]) - float64(b[j])
		s += d * d
	}
	return s
}

// L2Norm is the Euclidean norm, accumulated in float64 in index order.
func L2Norm(x []float32) float64 {
	var s float64
	for _, v := range x {
		s += float64(v) * float64(v)
	}
	return math.Sqrt(s)
}

// ClipL2 returns x scaled down to L2 norm at most c (x itself if it is
// already within the bound).
func ClipL2(x []float32, c float64) []float32 {
	norm := L2Norm(x)
	if norm <= c {
		return x
	}
	s := c / norm
	out := make([]float32, len(x))
	for i, v := range x {
		out[i] = float32(float64(v) * s)
	}
	return out
}
