package learner

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
)

func ups(vals ...[]float32) []Update {
	out := make([]Update, len(vals))
	for i, v := range vals {
		out[i] = Update{ID: fmt.Sprintf("u%02d", i), Delta: v, Samples: 1}
	}
	return out
}

func TestAggregateRules(t *testing.T) {
	five := ups([]float32{1, 10}, []float32{2, 20}, []float32{3, 30}, []float32{4, 40}, []float32{100, -1000})
	tests := []struct {
		name string
		cfg  AggConfig
		in   []Update
		want []float32
	}{
		{"mean", AggConfig{Rule: RuleMean}, five, []float32{22, -180}},
		{"weighted mean", AggConfig{Rule: RuleMean},
			[]Update{{"a", []float32{0}, 1}, {"b", []float32{4}, 3}}, []float32{3}},
		{"median odd", AggConfig{Rule: RuleMedian}, five, []float32{3, 20}},
		{"median even", AggConfig{Rule: RuleMedian}, five[:4], []float32{2.5, 25}},
		{"trimmed β=0.2 cuts one per end", AggConfig{Rule: RuleTrimmedMean, Trim: 0.2}, five, []float32{3, 20}},
		{"trimmed β=0 is the mean", AggConfig{Rule: RuleTrimmedMean, Trim: 1e-9}, five, []float32{22, -180}},
		{"krum drops the outlier", AggConfig{Rule: RuleKrum, KrumF: 1, KrumM: 4}, five, []float32{2.5, 25}},
		{"krum m=1 picks the most central", AggConfig{Rule: RuleKrum, KrumF: 1, KrumM: 1}, five, []float32{2, 20}},
		{"a claim of a million samples buys no weight past the cap", AggConfig{Rule: RuleMean, MaxSamples: 3},
			[]Update{{"a", []float32{0}, 3}, {"liar", []float32{4}, 1_000_000}}, []float32{2}},
		{"norm bound then mean", AggConfig{Rule: RuleMean, NormBound: 5},
			ups([]float32{3, 4}, []float32{30, 40}), []float32{3, 4}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Aggregate(tc.cfg, tc.in)
			if err != nil {
				t.Fatal(err)
			}
			for i := range got {
				if math.Abs(float64(got[i]-tc.want[i])) > 1e-5*math.Max(1, math.Abs(float64(tc.want[i]))) {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
}

func TestCenteredClipBoundsOutlierPull(t *testing.T) {
	honest := make([][]float32, 7)
	rng := rand.New(rand.NewPCG(3, 3))
	for i := range honest {
		honest[i] = []float32{1 + 0.1*float32(rng.NormFloat64()), 1 + 0.1*float32(rng.NormFloat64())}
	}
	in := ups(append(honest, []float32{1e6, -1e6}, []float32{1e6, -1e6}, []float32{1e6, -1e6})...)
	got, err := Aggregate(AggConfig{Rule: RuleCenteredClip}, in)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(float64(got[0])-1) > 0.5 || math.Abs(float64(got[1])-1) > 0.5 {
		t.Fatalf("centered clipping moved to %v", got)
	}
}

func TestAggregateErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  AggConfig
		in   []Update
		want error
	}{
		{"unknown rule", AggConfig{Rule: "avg"}, ups([]float32{1}), ErrConfig},
		{"trim 0.5", AggConfig{Rule: RuleTrimmedMean, Trim: 0.5}, ups([]float32{1}), ErrConfig},
		{"negative bound", AggConfig{Rule: RuleMean, NormBound: -1}, ups([]float32{1}), ErrConfig},
		{"empty", AggConfig{Rule: RuleMean}, nil, ErrAggregate},
		{"length mismatch", AggConfig{Rule: RuleMean}, ups([]float32{1}, []float32{1, 2}), ErrAggregate},
		{"NaN", AggConfig{Rule: RuleMedian}, ups([]float32{float32(math.NaN())}), ErrAggregate},
		{"Inf", AggConfig{Rule: RuleMean}, ups([]float32{float32(math.Inf(1))}), ErrAggregate},
		{"no samples", AggConfig{Rule: RuleMean}, []Update{{"a", []float32{1}, 0}}, ErrAggregate},
		{"duplicate ID", AggConfig{Rule: RuleMean}, []Update{{"a", []float32{1}, 1}, {"a", []float32{1}, 1}}, ErrAggregate},
		{"krum too few", AggConfig{Rule: RuleKrum, KrumF: 2}, ups([]float32{1}, []float32{1}, []float32{1}), ErrAggregate},
		{"krum m > n", AggConfig{Rule: RuleKrum, KrumF: 1, KrumM: 9}, ups([]float32{1}, []float32{1}, []float32{1}, []float32{1}, []float32{1}), ErrAggregate},
	}
	for _, tc := range tests {
		if _, err := Aggregate(tc.cfg, tc.in); !errors.Is(err, tc.want) {
			t.Errorf("%s: error %v, want %v", tc.name, err, tc.want)
		}
	}
}

// TestAggregateBitIdentical is the determinism contract of DESIGN.md §2:
// whatever the arrival order and GOMAXPROCS, every rule returns the same bits.
func TestAggregateBitIdentical(t *testing.T) {
	seed := uint64(20261129)
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	const n, dim = 11, 4099
	in := make([]Update, n)
	for i := range in {
		d := make([]float32, dim)
		for j := range d {
			d[j] = float32(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(7)-3)))
		}
		in[i] = Update{ID: fmt.Sprintf("bafy%03d", rng.IntN(1000)*100+i), Delta: d, Samples: 1 + rng.IntN(500)}
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for _, rule := range Rules {
		cfg := AggConfig{Rule: rule, NormBound: 50}
		runtime.GOMAXPROCS(1)
		ref, err := Aggregate(cfg, in)
		if err != nil {
			t.Fatal(err)
		}
		runtime.GOMAXPROCS(2)
		for trial := range 20 {
			shuffled := slices.Clone(in)
			rng.Shuffle(n, func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			got, err := Aggregate(cfg, shuffled)
			if err != nil {
				t.Fatal(err)
			}
			for j := range got {
				if math.Float32bits(got[j]) != math.Float32bits(ref[j]) {
					t.Fatalf("%s trial %d: coordinate %d is %x, GOMAXPROCS=1 in order gave %x", rule, trial, j,
						math.Float32bits(got[j]), math.Float32bits(ref[j]))
				}
			}
		}
	}
}

// TestRobustRulesResistAttacks checks each attack against each rule on
// synthetic updates: honest updates cluster around a true direction, and a
// robust rule's output must stay close to it.
func TestRobustRulesResistAttacks(t *testing.T) {
	seed := uint64(42)
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	const n, f, dim = 10, 3, 500
	truth := make([]float32, dim)
	for j := range truth {
		truth[j] = float32(rng.NormFloat64())
	}
	honest := make([][]float32, n-f)
	for i := range honest {
		honest[i] = make([]float32, dim)
		for j := range truth {
			honest[i][j] = truth[j] + float32(0.3*rng.NormFloat64())
		}
	}
	for _, name := range []string{AttackSignFlip, AttackScale, AttackNoise} {
		atk, _ := ParseAttack(name)
		var in []Update
		for i, h := range honest {
			in = append(in, Update{ID: fmt.Sprintf("h%d", i), Delta: h, Samples: 1})
		}
		for i := range f {
			forged := atk.Forge(honest[i], honest, dim, n, f, rng)
			if name == AttackNoise {
				forged = atk.Forge(nil, honest, dim, n, f, rng)
				for j := range forged {
					forged[j] *= 100
				}
			}
			in = append(in, Update{ID: fmt.Sprintf("b%d", i), Delta: forged, Samples: 1})
		}
		for _, rule := range Rules {
			got, err := Aggregate(AggConfig{Rule: rule}, in)
			if err != nil {
				t.Fatal(err)
			}
			rel := math.Sqrt(sqDist(got, truth)) / L2Norm(truth)
			robust := rule != RuleMean
			if robust && rel > 0.5 {
				t.Errorf("%s vs %s: relative error %.2f", rule, name, rel)
			}
			if !robust && rel < 1 {
				t.Errorf("mean vs %s: relative error only %.2f: the attack is too weak to show anything", name, rel)
			}
		}
	}
}

func TestApplyMomentum(t *testing.T) {
	base := []float32{1, 2, 3}
	parent := []float32{0.5, 2, 4}
	agg := []float32{0.1, -0.1, 0}
	for _, tc := range []struct {
		name   string
		parent []float32
		mu     float64
		want   []float32
	}{
		{"no momentum", parent, 0, []float32{1.1, 1.9, 3}},
		{"first height", nil, 0.9, []float32{1.1, 1.9, 3}},
		{"momentum", parent, 0.5, []float32{1 + 0.1 + 0.25, 1.9, 3 - 0.5}},
	} {
		got := ApplyMomentum(base, tc.parent, agg, tc.mu)
		for i := range got {
			if d := got[i] - tc.want[i]; d > 1e-6 || d < -1e-6 {
				t.Fatalf("%s: %v, want %v", tc.name, got, tc.want)
			}
		}
	}
	if err := (AggConfig{Rule: RuleMean, ServerMomentum: 1}).Validate(); err == nil {
		t.Fatal("momentum 1 accepted")
	}
}
