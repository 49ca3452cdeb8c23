package sim

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/murmur-ml/murmur/learner"
)

// scenarioRun runs a small full-stack network on synthetic data: the
// protocol under faults is what these tests check, not the learning.
func scenarioRun(t *testing.T, peers, rounds int, nw Network, tweak func(*Config)) Report {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Peers, cfg.Rounds, cfg.Byzantine = peers, rounds, 0
	cfg.Attack, _ = learner.ParseAttack(learner.AttackNone)
	cfg.Agg = learner.AggConfig{Rule: learner.RuleMean}
	cfg.Partition, _ = learner.ParsePartition("iid")
	cfg.Train.Steps, cfg.Train.BatchSize = 3, 32
	if tweak != nil {
		tweak(&cfg)
	}
	if nw.WindowTicks == 0 {
		// Long enough that a proposer never gives up on an update that is
		// merely late (reproducible blocks), short enough for crash tests.
		nw.WindowTicks = 300
	}
	if os.Getenv("MURMUR_SIM_LOG") != "" {
		nw.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	train := learner.Synthetic(200*peers, rand.New(rand.NewPCG(cfg.Seed, 1)))
	test := learner.Synthetic(200, rand.New(rand.NewPCG(cfg.Seed, 2)))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	t.Logf("seed %d", cfg.Seed)
	rep, err := RunNetwork(ctx, cfg, nw, train, test, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.RoundsCommitted != rounds || !rep.HeadsAgree {
		t.Fatalf("committed %d of %d rounds, heads agree: %v", rep.RoundsCommitted, rounds, rep.HeadsAgree)
	}
	for _, r := range rep.Rounds {
		t.Logf("round %d: %d updates, %.2f s, head %s", r.Round, r.Contributors, r.Seconds, r.HeadCID)
		if !r.HeadsAgree {
			t.Fatalf("round %d: heads differ", r.Round)
		}
	}
	return rep
}

// Same seed, same scenario: the same head CID at every height (identities,
// data, training, noise and block contents all follow from the seed).
func TestReproducibleHeads(t *testing.T) {
	a := scenarioRun(t, 4, 3, Network{}, nil)
	b := scenarioRun(t, 4, 3, Network{}, nil)
	for i := range a.Rounds {
		if a.Rounds[i].HeadCID != b.Rounds[i].HeadCID {
			t.Fatalf("round %d: %s then %s", i+1, a.Rounds[i].HeadCID, b.Rounds[i].HeadCID)
		}
	}
	c := scenarioRun(t, 4, 1, Network{}, func(c *Config) { c.Seed = 2 })
	if c.Rounds[0].HeadCID == a.Rounds[0].HeadCID {
		t.Fatal("another seed gave the same head")
	}
}

// One validator is cut off at height 2 and reconnected at height 4: the
// other four (a quorum) go on, and it catches up to the same heads.
func TestScenarioPartition(t *testing.T) {
	scenarioRun(t, 5, 6, Network{LatencyMs: 2, Events: []Event{
		{At: 2, Action: "partition", Peers: []int{4}},
		{At: 4, Action: "heal"},
	}}, nil)
}

// A peer started only at height 2 catches up from certified commits and
// contributes to later blocks.
func TestScenarioLateJoiner(t *testing.T) {
	rep := scenarioRun(t, 5, 6, Network{Late: []int{4}, Events: []Event{{At: 2, Action: "join", Peers: []int{4}}}}, nil)
	joined := false
	for _, r := range rep.Rounds[2:] {
		joined = joined || r.Contributors == 5
	}
	if rep.Rounds[0].Contributors != 4 || !joined {
		t.Fatalf("contributors %d at height 1 and never 5 after the join", rep.Rounds[0].Contributors)
	}
}

// A validator crashes at height 2 and restarts from its log, ledger and
// store at height 4; the network never stops and it rejoins.
func TestScenarioCrashRestart(t *testing.T) {
	rep := scenarioRun(t, 5, 7, Network{Events: []Event{
		{At: 2, Action: "crash", Peers: []int{3}},
		{At: 4, Action: "restart", Peers: []int{3}},
	}}, nil)
	if rep.Rounds[6].Contributors != 5 {
		t.Fatalf("the restarted peer does not contribute again: %d updates at height 7", rep.Rounds[6].Contributors)
	}
}

// A Byzantine validator's aggregates are wrong: when it proposes, honest
// validators re-execute, refuse the block and a later round commits the
// right one; its votes against honest blocks are outweighed.
func TestScenarioLyingProposer(t *testing.T) {
	rep := scenarioRun(t, 4, 6, Network{Lying: []int{1}}, nil)
	refused := 0
	for _, r := range rep.Rounds {
		if r.CommitRound > 0 {
			refused++
		}
	}
	if refused == 0 {
		t.Fatal("no height needed a second round: the liar never proposed, the test shows nothing")
	}
	t.Logf("%d of %d heights committed after refusing the liar's block", refused, len(rep.Rounds))
}

// The scenario files shipped in scenarios/ parse and apply.
func TestScenarioFilesParse(t *testing.T) {
	files, err := filepath.Glob("../scenarios/*.toml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenario files: %v", err)
	}
	for _, f := range files {
		sc, err := LoadScenario(f)
		if err != nil {
			t.Fatal(err)
		}
		cfg := DefaultConfig()
		if err := sc.Apply(&cfg); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	for _, tc := range []struct {
		name, text string
		want       error // nil: applies
	}{
		{"unknown action", "[network]\nevent = [{at = 1, action = \"explode\"}]\n", ErrScenario},
		{"dp mode without sigma", "dp_mode = \"sample\"\n", ErrScenario},
		{"unknown dp mode", "dp_sigma = 1.0\ndp_mode = \"sometimes\"\n", ErrConfig},
		{"dp-sgd", "dp_sigma = 1.0\ndp_mode = \"sample\"\n", nil},
	} {
		path := filepath.Join(t.TempDir(), "s.toml")
		if err := os.WriteFile(path, []byte(tc.text), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg := DefaultConfig()
		sc, err := LoadScenario(path)
		if err == nil {
			err = sc.Apply(&cfg)
		}
		if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
		if tc.name == "dp-sgd" && (cfg.DP == nil || cfg.DP.Mode != DPSample) {
			t.Errorf("dp-sgd: config %+v", cfg.DP)
		}
	}
}

// A validator double-signs every vote and two outside hosts flood every
// topic with invalid messages: honest peers commit the same heads, record
// the double signs as evidence, and their gossip validators reject spam.
func TestScenarioEquivocationAndSpam(t *testing.T) {
	rep := scenarioRun(t, 5, 4, Network{Equivocating: []int{2}, Spammers: 2, SpamRate: 50}, nil)
	t.Logf("%d conflicting votes, up to %d evidence records; %d spam messages, %d rejected",
		rep.EquivocatingVotes, rep.Equivocations, rep.SpamSent, rep.SpamRejected)
	if rep.EquivocatingVotes == 0 || rep.Equivocations == 0 {
		t.Fatalf("equivocation went unnoticed: %d votes sent, %d evidence records", rep.EquivocatingVotes, rep.Equivocations)
	}
	if rep.SpamSent == 0 || rep.SpamRejected == 0 {
		t.Fatalf("spam: %d sent, %d rejected", rep.SpamSent, rep.SpamRejected)
	}
}

// A committee of 3 validators among 9 trainers, each peer linked to the
// committee and 2 random others: every trainer's update still reaches the
// blocks (the committee fetches it from its author or a neighbour).
func TestScenarioCommitteeSparse(t *testing.T) {
	rep := scenarioRun(t, 9, 3, Network{Validators: 3, Degree: 2}, nil)
	for _, r := range rep.Rounds {
		if r.Contributors != 9 {
			t.Fatalf("round %d: %d updates, want all 9 trainers", r.Round, r.Contributors)
		}
	}
}

// ALIE on the full stack: the colluding attacker forges from the honest
// updates of each height (4 honest × 3 rounds; fewer only if an honest
// trainer skipped a height, as a slow one does under the race detector),
// the round does not stall waiting for it, and the heads agree.
func TestScenarioOmniscientAttack(t *testing.T) {
	rep := scenarioRun(t, 5, 3, Network{}, func(c *Config) {
		c.Byzantine = 1
		c.Attack, _ = learner.ParseAttack(learner.AttackALIE)
		c.Agg = learner.AggConfig{Rule: learner.RuleTrimmedMean}
	})
	t.Logf("the attacker forged from %d honest updates over 3 heights", rep.AttackerViews)
	if rep.AttackerViews < 3*3 {
		t.Fatalf("the attacker forged from %d honest updates, want 12 (at least 9)", rep.AttackerViews)
	}
	for _, r := range rep.Rounds {
		if r.Contributors != 5 {
			t.Fatalf("round %d: %d updates, want 5 (the attacker's included)", r.Round, r.Contributors)
		}
	}
}

// Every link loses 20% of the gossip on it, one link half and is slow:
// other paths, rebroadcasts, re-announcements and catch-up carry the
// rounds through.
func TestScenarioLossyLinks(t *testing.T) {
	half := 0.5
	rep := scenarioRun(t, 5, 4, Network{Loss: 0.2, Links: []LinkSpec{{A: 0, B: 1, LatencyMs: 40, BandwidthMbps: 20, Loss: &half}}}, nil)
	if rep.GossipLost == 0 {
		t.Fatal("no gossip was lost: the loss setting did nothing")
	}
	t.Logf("%d gossip messages lost", rep.GossipLost)
}

// A validator that never proposes: the heights it should propose commit
// in a later round (after the propose timeout), the others in round 0.
func TestScenarioSilentProposer(t *testing.T) {
	rep := scenarioRun(t, 4, 6, Network{Silent: []int{2}, WindowTicks: 100}, nil)
	later := 0
	for _, r := range rep.Rounds {
		if r.CommitRound > 0 {
			later++
		}
	}
	t.Logf("%d proposals withheld; %d of %d heights committed after round 0", rep.ProposalsWithheld, later, len(rep.Rounds))
	if rep.ProposalsWithheld == 0 || later == 0 {
		t.Fatalf("the silent validator withheld %d proposals and %d heights needed another round: it never had its turn", rep.ProposalsWithheld, later)
	}
}

// DP on the full stack, both modes: σ is chosen so that the whole run
// spends at most the target ε, and each peer's accountant composes exactly what its
// updates cost: one Gaussian mechanism per update, or with DP-SGD one
// sampled mechanism per local step at rate batch/n.
func TestFullStackPrivacy(t *testing.T) {
	const rounds, target = 3, 4.0
	for _, tc := range []struct {
		mode  string
		clip  float64 // small for update-level DP, or its noise swamps the synthetic task
		q     float64
		steps int
	}{
		{DPUpdate, 0.01, 1, 1},
		{DPSample, 1, 32.0 / 200, 3}, // scenarioRun: 200 samples per peer, batch 32, 3 steps
	} {
		t.Run(tc.mode, func(t *testing.T) {
			rep := scenarioRun(t, 4, rounds, Network{}, func(c *Config) {
				c.DP = &DP{Mode: tc.mode, Clip: tc.clip, Epsilon: target, Delta: 1e-5}
			})
			if rep.DPMode != tc.mode || !(rep.DPSigma > 0) {
				t.Fatalf("report: mode %q σ %v", rep.DPMode, rep.DPSigma)
			}
			eps := func(updates int) float64 {
				b, _ := learner.NewBudget(1e9, 1e-5)
				e, _ := b.After(rep.DPSigma, tc.q, updates*tc.steps)
				return e
			}
			t.Logf("%s: σ %.4f; ε spent %.4f (the accountant: %.4f after %d updates, %.4f after %d)",
				tc.mode, rep.DPSigma, rep.Epsilon, eps(rounds), rounds, eps(rounds+1), rounds+1)
			// A peer trains the height after the last as soon as the last
			// commits, and may release that update before the run stops: σ
			// is chosen for R+1 updates.
			if e := eps(rounds + 1); !(e <= target && e > 0.97*target) {
				t.Fatalf("σ %v spends ε %v over %d trainings, want just under %v", rep.DPSigma, e, rounds+1, target)
			}
			if e := rep.Epsilon; math.Abs(e-eps(rounds)) > 1e-9 && math.Abs(e-eps(rounds+1)) > 1e-9 {
				t.Fatalf("ε spent %v is neither %d nor %d updates' worth", e, rounds, rounds+1)
			}
		})
	}
}
