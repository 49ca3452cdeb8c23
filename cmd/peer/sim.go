package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/murmur-ml/murmur/learner"
	"github.com/murmur-ml/murmur/sim"
)

// simSummary is `peer sim --json`: the report plus the baseline.
type simSummary struct {
	sim.Report
	CentralizedAccuracy *float64 `json:"centralized_accuracy,omitempty"`
	Out                 string   `json:"out,omitempty"`
}

func runSim(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	def := sim.DefaultConfig()
	fs := newFlags("sim", stderr)
	peers := fs.Int("peers", def.Peers, "number of peers")
	rounds := fs.Int("rounds", def.Rounds, "rounds to run")
	byz := fs.Int("byzantine", def.Byzantine, "number of Byzantine peers")
	attack := fs.String("attack", def.Attack.Name, "attack of the Byzantine peers: none, sign-flip, scale, noise, label-flip, alie, ipm")
	strength := fs.Float64("attack-strength", 0, "attack strength (0: the attack's default; see learner.Attack)")
	agg := fs.String("aggregator", def.Agg.Rule, "aggregation rule: mean, median, trimmed-mean, krum, centered-clip")
	trim := fs.Float64("trim", 0, "trimmed mean: fraction β cut from each end, in [0,0.5) (0: 0.3)")
	krumF := fs.Int("krum-f", 0, "Multi-Krum: Byzantine inputs tolerated (0: the most n allows)")
	krumM := fs.Int("krum-m", 0, "Multi-Krum: inputs averaged (0: n−f)")
	momentum := fs.Float64("server-momentum", def.Agg.ServerMomentum, "server momentum μ: each height also moves by μ × the previous height's step (0: plain)")
	normBound := fs.Float64("norm-bound", 0, "clip every update to this L2 norm before aggregating (0: off)")
	partition := fs.String("partition", def.Partition.String(), "data split: iid, dirichlet:A or shards:K")
	model := fs.String("model", def.Model, "architecture: 2nn or cnn")
	epochs := fs.Int("local-epochs", def.Train.Epochs, "local epochs per round")
	steps := fs.Int("local-steps", 0, "local mini-batches per round (overrides --local-epochs)")
	batch := fs.Int("batch", def.Train.BatchSize, "local mini-batch size")
	lr := fs.Float64("lr", def.Train.LR, "local learning rate")
	dpSigma := fs.Float64("dp-sigma", 0, "DP: noise multiplier σ of each update (0: no DP)")
	dpClip := fs.Float64("dp-clip", 1, "DP: L2 clipping norm C of each update")
	dpEps := fs.Float64("dp-epsilon", 0, "DP: pick σ so that each peer spends this ε over all rounds (instead of --dp-sigma)")
	dpDelta := fs.Float64("dp-delta", 1e-5, "DP: δ")
	dpMode := fs.String("dp-mode", sim.DPUpdate, "DP: update (clip and noise each round's update) or sample (DP-SGD: per-example clipping and noise at every local step)")
	dpBudget := fs.Float64("dp-budget", 0, "DP: ε after which a peer stops contributing (0: none)")
	seed := fs.Uint64("seed", def.Seed, "seed of everything random in the run")
	workers := fs.Int("workers", 0, "peers trained concurrently (0: GOMAXPROCS)")
	centralized := fs.Bool("centralized", false, "also train the model centrally for the same number of epochs and report centralized_accuracy")
	out := fs.String("out", "", "write report.html, plots (PNG, SVG), rounds.csv, report.json and head.car here (default: a murmur-sim-SEED folder in the temp dir)")
	matrix := fs.Bool("matrix", false, "run every aggregator honestly and under every attack (with --byzantine F) and print the accuracy table")
	matrixRules := fs.String("matrix-aggregators", strings.Join(learner.Rules, ","), "aggregators of --matrix")
	matrixAttacks := fs.String("matrix-attacks", strings.Join(learner.Attacks, ","), "attacks of --matrix")
	matrixFractions := fs.String("matrix-fractions", "", "Byzantine fractions of --matrix, e.g. 0,0.1,0.2,0.3 (default: --byzantine)")
	asJSON := fs.Bool("json", false, "print one JSON summary object on stdout (the table goes to stderr)")
	learningOnly := fs.Bool("learning-only", false, "simulate only the learning (no network, consensus or storage): the fast engine the attack matrix uses")
	scenario := fs.String("scenario", "", "scenario file (TOML): settings plus a timeline of crashes, partitions, late joins, lying peers")
	latency := fs.Int("latency-ms", 2, "full stack: one-way latency of every link")
	bandwidth := fs.Float64("bandwidth-mbps", 0, "full stack: bandwidth of every link (0: unlimited)")
	loss := fs.Float64("loss", 0, "full stack: fraction of gossip messages lost on every link, in [0,1)")
	validators := fs.Int("validators", 0, "full stack: only peers 0..N-1 validate, every peer trains (0: all validate)")
	degree := fs.Int("degree", 0, "full stack: connect each peer to the validators and this many random peers (0: to every peer)")
	codec := fs.String("codec", "dense", "full stack: update encoding dense, int8 or topk")
	topk := fs.Float64("topk", 0.01, "full stack: fraction of each update kept by --codec topk")
	logFile := fs.String("log", "", "full stack: write every peer's debug log (text) to this file")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the run to this file (go tool pprof)")
	memProfile := fs.String("memprofile", "", "full stack: write a heap profile, taken at the end while every peer is up, to this file")
	load := dataFlag(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	cfg := def
	cfg.Peers, cfg.Rounds, cfg.Byzantine, cfg.Model, cfg.Seed, cfg.Workers = *peers, *rounds, *byz, *model, *seed, *workers
	cfg.Train.Epochs, cfg.Train.Steps, cfg.Train.BatchSize, cfg.Train.LR = *epochs, *steps, *batch, *lr
	cfg.Agg = learner.AggConfig{Rule: *agg, Trim: *trim, KrumF: *krumF, KrumM: *krumM, NormBound: *normBound, ServerMomentum: *momentum}
	var err error
	if cfg.Partition, err = learner.ParsePartition(*partition); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if cfg.Attack, err = learner.ParseAttack(*attack); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	cfg.Attack.Strength = *strength
	if *matrix {
		// The matrix chooses attacks itself; the default one only has to parse.
		cfg.Attack, _ = learner.ParseAttack(learner.AttackSignFlip)
	}
	if cfg.Attack.Name == learner.AttackNone && !isSet(fs, "byzantine") {
		cfg.Byzantine = 0
	}
	if *trim != 0 && *agg != learner.RuleTrimmedMean {
		return fmt.Errorf("%w: --trim applies to --aggregator trimmed-mean, not %s", errUsage, *agg)
	}
	switch {
	case *dpSigma < 0 || *dpEps < 0:
		return fmt.Errorf("%w: --dp-sigma and --dp-epsilon must be ≥ 0", errUsage)
	case *dpSigma > 0 || *dpEps > 0:
		cfg.DP = &sim.DP{Mode: *dpMode, Clip: *dpClip, Sigma: *dpSigma, Epsilon: *dpEps, Delta: *dpDelta, Budget: *dpBudget}
	case isSet(fs, "dp-clip") || isSet(fs, "dp-mode") || *dpBudget != 0:
		return fmt.Errorf("%w: --dp-clip, --dp-mode and --dp-budget need --dp-sigma or --dp-epsilon", errUsage)
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	nw := sim.Network{LatencyMs: *latency, BandwidthMbps: *bandwidth, Codec: *codec, TopK: *topk, Validators: *validators, Degree: *degree, Loss: *loss}
	title := "murmur simulation"
	if *scenario != "" {
		sc, err := sim.LoadScenario(*scenario)
		if err != nil {
			return err
		}
		if err := sc.Apply(&cfg); err != nil {
			return fmt.Errorf("%s: %w", *scenario, err)
		}
		nw = sc.Network
		if sc.Name != "" {
			title = "murmur simulation: " + sc.Name
		}
		if *learningOnly {
			return fmt.Errorf("%w: a scenario runs on the full stack, not with --learning-only", errUsage)
		}
	}
	full := !*learningOnly && !*matrix
	if *out == "" && !*matrix {
		*out = filepath.Join(os.TempDir(), fmt.Sprintf("murmur-sim-%d", cfg.Seed))
	}
	train, test, err := load(stderr)
	if err != nil {
		return err
	}

	table := stdout
	if *asJSON {
		table = stderr
	}
	if *matrix {
		rules, attacks := strings.Split(*matrixRules, ","), strings.Split(*matrixAttacks, ",")
		for _, a := range attacks {
			if _, err := learner.ParseAttack(a); err != nil {
				return fmt.Errorf("%w: %v", errUsage, err)
			}
		}
		fractions := []float64{0, float64(cfg.Byzantine) / float64(cfg.Peers)}
		if *matrixFractions != "" {
			fractions = nil
			for _, f := range strings.Split(*matrixFractions, ",") {
				v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
				if err != nil || v < 0 || v >= 0.5 {
					return fmt.Errorf("%w: --matrix-fractions: %q is not a fraction in [0, 0.5)", errUsage, f)
				}
				fractions = append(fractions, v)
			}
		}
		res, err := runMatrixFractions(ctx, cfg, rules, attacks, fractions, train, test, table, stderr)
		if err != nil {
			return err
		}
		if *out != "" {
			rep := sim.Report{Seed: cfg.Seed, Peers: cfg.Peers, Byzantine: cfg.Byzantine, Attack: "matrix", Aggregator: strings.Join(rules, ", "),
				Partition: cfg.Partition.String(), Model: cfg.Model}
			if err := sim.WriteOutput(*out, sim.Output{Title: "murmur attack matrix", Report: rep, Compare: res.Series, Matrix: res.Rows,
				Summary: map[string]any{"seed": cfg.Seed, "peers": cfg.Peers, "partition": cfg.Partition.String(), "rounds": cfg.Rounds, "matrix": res.Cells},
				Extra:   map[string]string{"engine": "learning only (each cell is a full run)", "cells": fmt.Sprint(len(res.Cells))}}); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "report: %s\n", filepath.Join(*out, "report.html"))
		}
		if *asJSON {
			return writeJSON(stdout, map[string]any{"seed": cfg.Seed, "peers": cfg.Peers, "byzantine": cfg.Byzantine,
				"partition": cfg.Partition.String(), "rounds": cfg.Rounds, "matrix": res.Cells})
		}
		return nil
	}
	engine := "full stack: libp2p mocknet, gossipsub, bitswap, BFT consensus with WAL and ledger, re-executed aggregation"
	if !full {
		engine = "learning only"
	}
	fmt.Fprintf(stderr, "sim: %d peers (%d Byzantine: %s), %s, %s, %s, %d rounds × %s, seed %d\nsim: %s\n",
		cfg.Peers, cfg.Byzantine, cfg.Attack.Name, cfg.Agg.String(), cfg.Partition, cfg.Model, cfg.Rounds, localWork(cfg.Train), cfg.Seed, engine)
	if cfg.DP != nil {
		fmt.Fprintf(stderr, "sim: DP (%s) on every honest peer: clip %g, δ %g, σ %s\n", cfg.DP.Mode, cfg.DP.Clip, *dpDelta,
			map[bool]string{true: fmt.Sprint(cfg.DP.Sigma), false: fmt.Sprintf("chosen for ε = %g", cfg.DP.Epsilon)}[cfg.DP.Sigma > 0])
	}
	// The bar redraws in place, which only a terminal shows well; logs and
	// pipes get the table alone.
	barOut := io.Discard
	if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		barOut = stderr
	}
	bar := progressbar.NewOptions(cfg.Rounds, progressbar.OptionSetWriter(barOut), progressbar.OptionSetDescription("rounds"),
		progressbar.OptionShowCount(), progressbar.OptionSetWidth(30), progressbar.OptionSetPredictTime(true),
		progressbar.OptionClearOnFinish())
	_ = bar.RenderBlank()
	fmt.Fprintf(table, "%5s %8s %7s %7s %6s %8s %9s %-14s %5s %6s\n", "round", "acc%", "loss", "train", "peers", "|Δ|", "ε", "head", "agree", "secs")
	var car *os.File
	if *out != "" {
		if err := os.MkdirAll(*out, 0o755); err != nil {
			return err
		}
		if car, err = os.Create(filepath.Join(*out, "head.car")); err != nil {
			return err
		}
		defer car.Close()
		cfg.HeadCAR = car
	}
	runner := sim.Run
	if full {
		runner = func(ctx context.Context, cfg sim.Config, train, test *learner.Dataset, observe func(sim.Round)) (sim.Report, error) {
			if *logFile != "" {
				f, err := os.Create(*logFile)
				if err != nil {
					return sim.Report{}, err
				}
				defer f.Close()
				nw.Log = slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug}))
			}
			if *memProfile != "" {
				f, err := os.Create(*memProfile)
				if err != nil {
					return sim.Report{}, err
				}
				defer f.Close()
				nw.HeapProfile = f
			}
			return sim.RunNetwork(ctx, cfg, nw, train, test, observe)
		}
	}
	rep, err := runner(ctx, cfg, train, test, func(r sim.Round) {
		_ = bar.Clear()
		fmt.Fprintf(table, "%5d %8.2f %7.4f %7.4f %6d %8.3f %9s %-14s %5v %6.1f\n", r.Round, 100*r.Accuracy, r.Loss, r.TrainLoss,
			r.Contributors, r.UpdateNorm, fmtEps(r.Epsilon), shortCID(r.HeadCID), r.HeadsAgree, r.Seconds)
		_ = bar.Add(1)
	})
	_ = bar.Finish()
	if err != nil {
		return err
	}
	sum := simSummary{Report: rep}
	if *centralized {
		acc, err := centralizedBaseline(cfg, train, test, stderr)
		if err != nil {
			return err
		}
		sum.CentralizedAccuracy = &acc
	}
	if *out != "" {
		sum.Out = *out
		extra := map[string]string{"engine": engine, "command": "peer " + strings.Join(append([]string{"sim"}, args...), " ")}
		if sum.CentralizedAccuracy != nil {
			extra["centralized baseline"] = fmt.Sprintf("%.2f%%", 100**sum.CentralizedAccuracy)
		}
		if err := sim.WriteOutput(*out, sim.Output{Title: title, Report: rep, Summary: sum, Extra: extra}); err != nil {
			return err
		}
	}
	if *asJSON {
		return writeJSON(stdout, sum)
	}
	fmt.Fprintf(stdout, "\nfinal accuracy %.2f%% after %d rounds in %.1fs; heads agree: %v; head %s\n",
		100*rep.FinalAccuracy, rep.RoundsCommitted, rep.Seconds, rep.HeadsAgree, rep.HeadCID)
	if sum.CentralizedAccuracy != nil {
		fmt.Fprintf(stdout, "centralized baseline %.2f%%\n", 100**sum.CentralizedAccuracy)
	}
	if rep.Epsilon > 0 {
		fmt.Fprintf(stdout, "privacy (%s, σ = %.4f): the most any honest peer spent is ε = %.3f at δ = %g\n", rep.DPMode, rep.DPSigma, rep.Epsilon, *dpDelta)
	}
	if rep.AttackerViews > 0 {
		fmt.Fprintf(stdout, "%s: the colluding attackers forged from %d honest updates in all (an omniscient adversary)\n", rep.Attack, rep.AttackerViews)
	}
	if rep.GossipLost > 0 {
		fmt.Fprintf(stdout, "loss: peers lost %d gossip messages\n", rep.GossipLost)
	}
	if rep.ProposalsWithheld > 0 {
		fmt.Fprintf(stdout, "silent proposers withheld %d proposals; their heights committed in a later round\n", rep.ProposalsWithheld)
	}
	if rep.EquivocatingVotes > 0 {
		fmt.Fprintf(stdout, "equivocation: %d conflicting votes sent; honest peers recorded up to %d pieces of evidence\n", rep.EquivocatingVotes, rep.Equivocations)
	}
	if rep.SpamSent > 0 {
		fmt.Fprintf(stdout, "spam: %d invalid messages sent; honest peers' validators rejected %d (the rest were dropped unread)\n", rep.SpamSent, rep.SpamRejected)
	}
	if rep.HeapPerPeer > 0 {
		fmt.Fprintf(stdout, "memory: %.1f MB of Go heap per peer at the end (stores included)\n", float64(rep.HeapPerPeer)/1e6)
	}
	if *out != "" {
		fmt.Fprintf(stdout, "report: %s (plots: accuracy, bytes, round-time .png/.svg; per round: rounds.csv; summary: report.json; head model: `peer inspect %s`)\n",
			filepath.Join(*out, "report.html"), filepath.Join(*out, "head.car"))
	}
	return nil
}

func isSet(fs *flag.FlagSet, name string) bool {
	found := false
	fs.Visit(func(f *flag.Flag) { found = found || f.Name == name })
	return found
}

// shortCID keeps a CID's start and its distinguishing end for the table.
func shortCID(c string) string {
	if len(c) < 16 {
		return c
	}
	return c[:4] + "…" + c[len(c)-8:]
}

func localWork(c learner.TrainConfig) string {
	if c.Steps > 0 {
		return fmt.Sprintf("%d local steps", c.Steps)
	}
	return fmt.Sprintf("%d local epoch(s)", c.Epochs)
}

func fmtEps(e float64) string {
	if e == 0 {
		return "-"
	}
	return strconv.FormatFloat(e, 'f', 3, 64)
}

// centralizedBaseline trains the same model on all the training data for as
// many epochs as one peer's data saw in the federated run.
func centralizedBaseline(cfg sim.Config, train, test *learner.Dataset, stderr io.Writer) (float64, error) {
	tc := cfg.Train
	tc.Steps = 0
	tc.Epochs = cfg.Rounds * max(cfg.Train.Epochs, 1)
	fmt.Fprintf(stderr, "centralized baseline: %d epochs on all %d samples\n", tc.Epochs, train.N())
	rng := rand.New(rand.NewPCG(cfg.Seed, 0))
	m, err := learner.NewModel(cfg.Model, rng)
	if err != nil {
		return 0, err
	}
	if _, err := learner.Train(m, train, tc, rng); err != nil {
		return 0, err
	}
	ev, err := learner.Evaluate(m, test)
	return ev.Accuracy, err
}
