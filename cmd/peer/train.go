package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/murmur-ml/murmur/learner"
	"github.com/murmur-ml/murmur/storage"
)

type trainResult struct {
	Model            string  `json:"model"`
	Params           int     `json:"params"`
	Epochs           int     `json:"epochs"`
	TestAccuracy     float64 `json:"test_accuracy"`
	TestLoss         float64 `json:"test_loss"`
	TrainLoss        float64 `json:"train_loss"`
	Seconds          float64 `json:"seconds"`
	SamplesPerSecond float64 `json:"samples_per_second"`
	Seed             uint64  `json:"seed"`
	CheckpointCID    string  `json:"checkpoint_cid,omitempty"`
}

func runTrain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("train", stderr)
	centralized := fs.Bool("centralized", false, "train on all of MNIST on this machine (the baseline federated runs are compared with)")
	epochs := fs.Int("epochs", 3, "passes over the training set")
	model := fs.String("model", learner.Arch2NN, "architecture: 2nn or cnn")
	seed := fs.Uint64("seed", 1, "seed of weight initialisation and batch order")
	batch := fs.Int("batch", 64, "mini-batch size")
	lr := fs.Float64("lr", 0.05, "peak learning rate")
	momentum := fs.Float64("momentum", 0.9, "SGD momentum")
	wd := fs.Float64("weight-decay", 1e-4, "L2 weight decay")
	schedule := fs.String("schedule", learner.ScheduleCosine, "learning-rate schedule: constant, cosine or step")
	val := fs.Float64("val", 0, "held-out fraction of the training set for early stopping (0: off)")
	patience := fs.Int("patience", 2, "epochs without validation improvement before stopping (with --val)")
	asJSON := fs.Bool("json", false, "print one JSON object on stdout")
	home := fs.String("home", "", "store the trained model as a checkpoint in this peer home and print its CID")
	load := dataFlag(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if !*centralized {
		return fmt.Errorf("%w: only --centralized training exists as a command; federated training is `peer sim` or `peer start`", errUsage)
	}
	cfg := learner.TrainConfig{Epochs: *epochs, BatchSize: *batch, LR: *lr, Momentum: *momentum,
		WeightDecay: *wd, Schedule: *schedule, ValFraction: *val, Patience: *patience}
	if *val == 0 {
		cfg.Patience = 0
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if _, err := learner.ArchByName(*model); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	train, test, err := load(stderr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "training %s centrally: %d epochs, batch %d, lr %g (%s), seed %d\n", *model, *epochs, *batch, *lr, *schedule, *seed)
	rng := rand.New(rand.NewPCG(*seed, 0))
	m, err := learner.NewModel(*model, rng)
	if err != nil {
		return err
	}
	start := time.Now()
	st, err := learner.Train(m, train, cfg, rng)
	if err != nil {
		return err
	}
	secs := time.Since(start).Seconds()
	ev, err := learner.Evaluate(m, test)
	if err != nil {
		return err
	}
	res := trainResult{Model: *model, Params: len(m.Params), Epochs: st.Epochs, TestAccuracy: ev.Accuracy, TestLoss: ev.Loss,
		TrainLoss: st.Loss, Seconds: secs, SamplesPerSecond: float64(st.Samples) / secs, Seed: *seed}
	if *home != "" {
		c, err := storeCheckpoint(ctx, *home, m, map[string]float64{"test_accuracy": ev.Accuracy, "test_loss": ev.Loss})
		if err != nil {
			return err
		}
		res.CheckpointCID = c.String()
	}
	if *asJSON {
		return writeJSON(stdout, res)
	}
	fmt.Fprintf(stdout, "test accuracy %.2f%% (loss %.4f) after %d epochs in %.1fs, %.0f samples/s\n",
		100*res.TestAccuracy, res.TestLoss, res.Epochs, res.Seconds, res.SamplesPerSecond)
	if res.CheckpointCID != "" {
		fmt.Fprintf(stdout, "checkpoint %s stored in %s\n", res.CheckpointCID, *home)
	}
	return nil
}

// storeCheckpoint writes m into the home's store as a pinned height-0
// checkpoint.
func storeCheckpoint(ctx context.Context, home string, m *learner.Model, metrics map[string]float64) (cid.Cid, error) {
	s, err := openStore(home, true)
	if err != nil {
		return cid.Undef, err
	}
	layers := make([]storage.Layer, len(m.Arch.Layers))
	for i, l := range m.Arch.Layers {
		layers[i] = storage.Layer{Name: l.Name, Shape: l.Shape}
	}
	c, err := s.PutCheckpoint(ctx, storage.Model{Arch: m.Arch.Name, Layers: layers, Params: m.Params},
		storage.CheckpointMeta{Height: 0, Metrics: metrics})
	if err == nil {
		err = s.Pin(ctx, c, 0)
	}
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	return c, err
}
