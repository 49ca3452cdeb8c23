package sim

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/murmur-ml/murmur/learner"
)

func smallConfig(seed uint64) Config {
	cfg := DefaultConfig()
	cfg.Peers, cfg.Rounds, cfg.Byzantine, cfg.Seed = 5, 3, 1, seed
	cfg.Train.Steps, cfg.Train.LR = 4, 0.01
	return cfg
}

func synthetic(seed uint64) (train, test *learner.Dataset) {
	return learner.Synthetic(1000, rand.New(rand.NewPCG(seed, 0))), learner.Synthetic(300, rand.New(rand.NewPCG(seed, 0)))
}

func TestRunReproducibleAndAgreeing(t *testing.T) {
	seed := uint64(77)
	t.Logf("seed %d", seed)
	train, test := synthetic(seed)
	var rounds []Round
	a, err := Run(context.Background(), smallConfig(seed), train, test, func(r Round) { rounds = append(rounds, r) })
	if err != nil {
		t.Fatal(err)
	}
	if len(rounds) != 3 || a.RoundsCommitted != 3 || !a.HeadsAgree || a.HeadCID == "" {
		t.Fatalf("report %+v, %d rounds observed", a, len(rounds))
	}
	if a.FinalAccuracy < 0.7 {
		t.Errorf("final accuracy %.3f on separable data", a.FinalAccuracy)
	}
	b, err := Run(context.Background(), smallConfig(seed), train, test, nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.HeadCID != b.HeadCID {
		t.Fatalf("same seed, different heads: %s vs %s", a.HeadCID, b.HeadCID)
	}
	c, err := Run(context.Background(), smallConfig(seed+1), train, test, nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.HeadCID == c.HeadCID {
		t.Fatal("different seeds, same head")
	}
	if !strings.HasPrefix(a.HeadCID, "bafyrei") {
		t.Fatalf("head %q is not a base32 CIDv1 of a dag-cbor sha2-256 checkpoint", a.HeadCID)
	}
}

func TestRunEveryAttackAndRule(t *testing.T) {
	train, test := synthetic(3)
	for _, atk := range learner.Attacks {
		for _, rule := range learner.Rules {
			cfg := smallConfig(3)
			cfg.Rounds, cfg.Peers, cfg.Byzantine = 1, 7, 2
			cfg.Attack, _ = learner.ParseAttack(atk)
			cfg.Agg = learner.AggConfig{Rule: rule}
			rep, err := Run(context.Background(), cfg, train, test, nil)
			if err != nil {
				t.Fatalf("%s/%s: %v", atk, rule, err)
			}
			if !rep.HeadsAgree || rep.Rounds[0].Contributors != 7 {
				t.Fatalf("%s/%s: %+v", atk, rule, rep.Rounds[0])
			}
		}
	}
}

func TestRunDPBudgetStopsPeers(t *testing.T) {
	train, test := synthetic(4)
	cfg := smallConfig(4)
	cfg.Byzantine, cfg.Rounds = 0, 4
	cfg.DP = &DP{Clip: 1, Sigma: 2, Budget: 3}
	var contributors []int
	rep, err := Run(context.Background(), cfg, train, test, func(r Round) { contributors = append(contributors, r.Contributors) })
	// ε of one round at σ=2, q=1, δ=1e-5 is ≈ 2.7 and of two ≈ 3.9, so every
	// peer contributes once and then stops; round 2 has no one left.
	if !errors.Is(err, ErrConfig) || len(contributors) != 1 || contributors[0] != 5 {
		t.Fatalf("err %v, contributors %v, report ε %v", err, contributors, rep.Epsilon)
	}
	if rep.Epsilon <= 0 || rep.Epsilon > 3 {
		t.Fatalf("ε spent %v, budget 3", rep.Epsilon)
	}
}

func TestConfigValidate(t *testing.T) {
	mod := func(f func(*Config)) Config { c := DefaultConfig(); f(&c); return c }
	bad := map[string]Config{
		"no peers":      mod(func(c *Config) { c.Peers = 0 }),
		"all byzantine": mod(func(c *Config) { c.Byzantine = c.Peers }),
		"byz no attack": mod(func(c *Config) { c.Attack = learner.Attack{Name: learner.AttackNone} }),
		"trim 0.5":      mod(func(c *Config) { c.Agg.Trim = 0.5 }),
		"krum with 4": mod(func(c *Config) {
			c.Agg = learner.AggConfig{Rule: learner.RuleKrum, KrumF: 1}
			c.Peers = 4
			c.Byzantine = 1
		}),
		"unknown model":    mod(func(c *Config) { c.Model = "vit" }),
		"dp clip 0":        mod(func(c *Config) { c.DP = &DP{Sigma: 1} }),
		"dp no sigma":      mod(func(c *Config) { c.DP = &DP{Clip: 1} }),
		"dp sigma and eps": mod(func(c *Config) { c.DP = &DP{Clip: 1, Sigma: 1, Epsilon: 3} }),
		"dp mode":          mod(func(c *Config) { c.DP = &DP{Clip: 1, Sigma: 1, Mode: "local"} }),
		"dp-sgd on cnn":    mod(func(c *Config) { c.Model = learner.ArchCNN; c.DP = &DP{Clip: 1, Sigma: 1, Mode: DPSample} }),
		"zero rounds":      mod(func(c *Config) { c.Rounds = 0 }),
		"unknown rule":     mod(func(c *Config) { c.Agg.Rule = "avg" }),
		"bad train config": mod(func(c *Config) { c.Train.BatchSize = 0 }),
	}
	for name, c := range bad {
		if err := c.Validate(); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestRunDPSampleSpendsTarget runs DP-SGD with σ derived from a target ε
// and checks that no peer overspends and that the accounting is exact.
func TestRunDPSampleSpendsTarget(t *testing.T) {
	train, test := synthetic(6)
	cfg := smallConfig(6)
	cfg.Byzantine, cfg.Rounds = 0, 3
	cfg.Train.Steps = 0
	cfg.Train.Epochs = 1
	cfg.DP = &DP{Mode: DPSample, Clip: 1, Epsilon: 4}
	rep, err := Run(context.Background(), cfg, train, test, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.DPSigma <= 0 || rep.Epsilon > 4 || rep.Epsilon < 3.9 {
		t.Fatalf("σ %v, ε spent %v (target 4, NoiseMultiplier's tolerance 0.01)", rep.DPSigma, rep.Epsilon)
	}
	if cfg.DP.Sigma != 0 {
		t.Fatal("Run changed the caller's config")
	}
}

func TestMetricJSON(t *testing.T) {
	for _, tc := range []struct {
		m    Metric
		want string
	}{{Metric(math.NaN()), "null"}, {Metric(math.Inf(1)), "null"}, {1.5, "1.5"}} {
		b, err := json.Marshal(tc.m)
		if err != nil || string(b) != tc.want {
			t.Errorf("%v → %s, %v", float64(tc.m), b, err)
		}
	}
}
