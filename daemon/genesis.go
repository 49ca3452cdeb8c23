package daemon

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"

	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/murmur-ml/murmur/consensus"
	"github.com/murmur-ml/murmur/learner"
	"github.com/murmur-ml/murmur/shard"
	"github.com/murmur-ml/murmur/storage"
)

// ErrGenesis reports an unusable genesis file; ErrConfig an unusable
// config.toml (or environment override).
var (
	ErrGenesis = errors.New("genesis")
	ErrConfig  = errors.New("config")
)

// Genesis is what every peer of one network must agree on: who votes, who
// may train, the starting model, the aggregation rule, how updates are
// trained, privatised and encoded, and the round's timing. Peers with
// different genesis files are on different networks in all but name, so
// the file is shared verbatim (peer testnet writes one for all homes).
type Genesis struct {
	Network    string      `json:"network"`
	Validators []Validator `json:"validators"`
	// Trainers lists the peer IDs allowed to contribute updates; empty
	// means any peer that can join the network.
	Trainers    []string    `json:"trainers,omitempty"`
	Model       ModelSpec   `json:"model"`
	Aggregation Aggregation `json:"aggregation"`
	Train       TrainSpec   `json:"train"`
	// DP, when set, clips and noises every update (DESIGN.md §1.3) and
	// gives each trainer a privacy budget.
	DP    *DPSpec   `json:"dp,omitempty"`
	Codec CodecSpec `json:"codec"`
	Round RoundSpec `json:"round"`
	// PSK, hex, makes a private network: only peers holding it connect.
	PSK string `json:"psk,omitempty"`
}

// Validator is a voting peer.
type Validator struct {
	ID    string `json:"id"`
	Power int64  `json:"power"`
}

// ModelSpec fixes the genesis model: the architecture initialised from
// Seed; CID is the checkpoint that gives, checked by every peer.
type ModelSpec struct {
	Arch string `json:"arch"`
	Seed uint64 `json:"seed"`
	CID  string `json:"cid"`
}

// Aggregation is the rule every validator re-executes.
type Aggregation struct {
	Rule      string  `json:"rule"`
	Trim      float64 `json:"trim,omitempty"`
	KrumF     int     `json:"krum_f,omitempty"`
	KrumM     int     `json:"krum_m,omitempty"`
	ClipTau   float64 `json:"clip_tau,omitempty"`
	ClipIters int     `json:"clip_iters,omitempty"`
	NormBound float64 `json:"norm_bound,omitempty"`
	// ServerMomentum μ: each height also moves by μ times the previous
	// height's step (read from the chain, so still re-executable).
	ServerMomentum float64 `json:"server_momentum,omitempty"`
	// MaxSamples caps the sample count an update may claim (its weight in
	// the mean); 0: no cap.
	MaxSamples int `json:"max_samples,omitempty"`
}

// TrainSpec is each trainer's local work per height.
type TrainSpec struct {
	Steps       int     `json:"steps"`
	Batch       int     `json:"batch"`
	LR          float64 `json:"lr"`
	Momentum    float64 `json:"momentum"`
	WeightDecay float64 `json:"weight_decay"`
}

// DPSpec is differential privacy for every trainer: with Mode "update"
// (the default) each update is clipped to Clip and noised with σ·Clip; with
// "sample" (DP-SGD) each example's gradient is clipped to Clip and every
// local step noised. A trainer stops contributing once ε (at δ) would pass
// Epsilon.
type DPSpec struct {
	Mode    string  `json:"mode,omitempty"`
	Clip    float64 `json:"clip"`
	Sigma   float64 `json:"sigma"`
	Epsilon float64 `json:"epsilon"`
	Delta   float64 `json:"delta"`
}

// DP modes.
const (
	DPUpdate = "update"
	DPSample = "sample"
)

// PerExample reports whether the spec is DP-SGD.
func (d *DPSpec) PerExample() bool { return d.Mode == DPSample }

// CodecSpec is how update shards are encoded.
type CodecSpec struct {
	Name string  `json:"name"`           // dense, int8 or topk
	TopK float64 `json:"topk,omitempty"` // kept fraction with topk
}

// RoundSpec is the round's timing, in ticks of TickMillis.
type RoundSpec struct {
	TickMillis       int `json:"tick_ms"`
	CollectTicks     int `json:"collect_ticks"`
	TimeoutPropose   int `json:"timeout_propose"`
	TimeoutPrevote   int `json:"timeout_prevote"`
	TimeoutPrecommit int `json:"timeout_precommit"`
	TimeoutDelta     int `json:"timeout_delta"`
	RebroadcastTicks int `json:"rebroadcast_ticks"`
	// HeadTicks is how often a validator republishes its latest commit on
	// the heads topic, so that peers arriving later learn the head.
	HeadTicks int `json:"head_ticks"`
	// WaitAll makes proposers wait (up to the collection window) for an
	// update from every listed trainer, so that blocks do not depend on
	// timing (the simulator's reproducibility).
	WaitAll bool `json:"wait_all,omitempty"`
}

// DefaultGenesis is a network of the given validators training the 2NN
// with the trimmed mean: the setting peer testnet writes.
func DefaultGenesis(network string, vals []Validator) *Genesis {
	return &Genesis{
		Network: network, Validators: vals,
		Model:       ModelSpec{Arch: learner.Arch2NN, Seed: 1},
		Aggregation: Aggregation{Rule: learner.RuleTrimmedMean},
		Train:       TrainSpec{Steps: 60, Batch: 64, LR: 0.05, Momentum: 0.9, WeightDecay: 1e-4},
		Codec:       CodecSpec{Name: "dense"},
		Round: RoundSpec{TickMillis: 100, CollectTicks: 100, TimeoutPropose: 150, TimeoutPrevote: 20,
			TimeoutPrecommit: 20, TimeoutDelta: 10, RebroadcastTicks: 60, HeadTicks: 50},
	}
}

// LoadGenesis reads and checks a genesis file (model CID not yet checked:
// see GenesisModel).
func LoadGenesis(path string) (*Genesis, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrGenesis, err)
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	var g Genesis
	if err := dec.Decode(&g); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrGenesis, path, err)
	}
	if err := g.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &g, nil
}

// Write stores the genesis as indented JSON.
func (g *Genesis) Write(path string) error {
	b, err := json.MarshalIndent(g, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func gerr(key, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrGenesis, key, fmt.Sprintf(format, args...))
}

// Validate reports the first unusable field, named as in the file.
func (g *Genesis) Validate() error {
	if g.Network == "" || len(g.Network) > 64 || strings.ContainsAny(g.Network, "/ \t\n") {
		return gerr("network", "%q: want 1–64 characters without '/' or spaces", g.Network)
	}
	if len(g.Validators) == 0 {
		return gerr("validators", "none: a network needs at least one validator")
	}
	for i, v := range g.Validators {
		if _, err := peer.Decode(v.ID); err != nil {
			return gerr(fmt.Sprintf("validators[%d].id", i), "%q is not a libp2p peer ID", v.ID)
		}
		if v.Power < 1 {
			return gerr(fmt.Sprintf("validators[%d].power", i), "%d: want ≥ 1", v.Power)
		}
	}
	if _, err := g.ValidatorSet(); err != nil {
		return gerr("validators", "%v", err)
	}
	for i, t := range g.Trainers {
		if _, err := peer.Decode(t); err != nil {
			return gerr(fmt.Sprintf("trainers[%d]", i), "%q is not a libp2p peer ID", t)
		}
	}
	if _, err := learner.ArchByName(g.Model.Arch); err != nil {
		return gerr("model.arch", "%q: want 2nn or cnn", g.Model.Arch)
	}
	if g.Model.CID != "" {
		if _, err := cid.Decode(g.Model.CID); err != nil {
			return gerr("model.cid", "%q is not a CID", g.Model.CID)
		}
	}
	if err := g.AggConfig().Validate(); err != nil {
		return gerr("aggregation", "%v", err)
	}
	if err := g.TrainConfig().Validate(); err != nil {
		return gerr("train", "%v", err)
	}
	if g.Train.Steps < 1 {
		return gerr("train.steps", "%d: want ≥ 1", g.Train.Steps)
	}
	if g.DP != nil {
		if err := (learner.DPConfig{Clip: g.DP.Clip, Sigma: g.DP.Sigma}).Validate(); err != nil {
			return gerr("dp", "%v", err)
		}
		if _, err := learner.NewBudget(g.DP.Epsilon, g.DP.Delta); err != nil {
			return gerr("dp", "%v", err)
		}
		if !(g.DP.Sigma > 0) {
			return gerr("dp.sigma", "%v: an update with no noise spends an unbounded ε", g.DP.Sigma)
		}
		switch g.DP.Mode {
		case "", DPUpdate:
		case DPSample:
			if g.Model.Arch != string(learner.Arch2NN) {
				return gerr("dp.mode", "sample (DP-SGD) supports the 2nn model only, not %q", g.Model.Arch)
			}
		default:
			return gerr("dp.mode", "%q: want update or sample", g.DP.Mode)
		}
	}
	c, err := shard.ParseCodec(g.Codec.Name)
	if err != nil {
		return gerr("codec.name", "%q: want dense, int8 or topk", g.Codec.Name)
	}
	if c == shard.TopK && !(g.Codec.TopK > 0 && g.Codec.TopK <= 1) {
		return gerr("codec.topk", "%v: want a fraction in (0, 1]", g.Codec.TopK)
	}
	r := g.Round
	if r.TickMillis < 1 || r.TickMillis > 10_000 {
		return gerr("round.tick_ms", "%d: want 1–10000", r.TickMillis)
	}
	if r.HeadTicks < 1 {
		return gerr("round.head_ticks", "%d: want ≥ 1", r.HeadTicks)
	}
	if _, err := g.ConsensusConfig(); err != nil {
		return gerr("round", "%v", err)
	}
	if r.WaitAll && len(g.Trainers) == 0 {
		return gerr("round.wait_all", "needs a trainers list (whom to wait for)")
	}
	if r.CollectTicks < 0 {
		return gerr("round.collect_ticks", "%d: want ≥ 0", r.CollectTicks)
	}
	if g.PSK != "" {
		if b, err := hex.DecodeString(g.PSK); err != nil || len(b) != 32 {
			return gerr("psk", "want 64 hex digits (32 bytes)")
		}
	}
	return nil
}

// ValidatorSet is the consensus view of the validators.
func (g *Genesis) ValidatorSet() (*consensus.ValidatorSet, error) {
	vals := make([]consensus.Validator, len(g.Validators))
	for i, v := range g.Validators {
		vals[i] = consensus.Validator{ID: v.ID, Power: v.Power}
	}
	return consensus.NewValidatorSet(vals)
}

// ConsensusConfig is the consensus machine's setting.
func (g *Genesis) ConsensusConfig() (consensus.Config, error) {
	vs, err := g.ValidatorSet()
	if err != nil {
		return consensus.Config{}, err
	}
	c := consensus.DefaultConfig(g.Network, vs)
	r := g.Round
	c.TimeoutPropose, c.TimeoutPrevote, c.TimeoutPrecommit, c.TimeoutDelta, c.RebroadcastTicks =
		r.TimeoutPropose, r.TimeoutPrevote, r.TimeoutPrecommit, r.TimeoutDelta, r.RebroadcastTicks
	return c, c.Validate()
}

// AggConfig is the learner's view of the rule.
func (g *Genesis) AggConfig() learner.AggConfig {
	a := g.Aggregation
	return learner.AggConfig{Rule: a.Rule, Trim: a.Trim, KrumF: a.KrumF, KrumM: a.KrumM, ClipTau: a.ClipTau,
		ClipIters: a.ClipIters, NormBound: a.NormBound, ServerMomentum: a.ServerMomentum, MaxSamples: a.MaxSamples}
}

// TrainConfig is the learner's view of local training.
func (g *Genesis) TrainConfig() learner.TrainConfig {
	c := learner.DefaultTrainConfig()
	t := g.Train
	c.Steps, c.BatchSize, c.LR, c.Momentum, c.WeightDecay = t.Steps, t.Batch, t.LR, t.Momentum, t.WeightDecay
	return c
}

// IsValidator reports whether id votes.
func (g *Genesis) IsValidator(id string) bool {
	return slices.ContainsFunc(g.Validators, func(v Validator) bool { return v.ID == id })
}

// MayTrain reports whether id may contribute updates.
func (g *Genesis) MayTrain(id string) bool {
	return len(g.Trainers) == 0 || slices.Contains(g.Trainers, id)
}

// GenesisModel builds the genesis model from the spec and stores it as a
// checkpoint in st (or in a throwaway store when st is nil), returning its
// CID. If the spec names a CID, the result must match it.
func (g *Genesis) GenesisModel(ctx context.Context, st *storage.Store) (cid.Cid, error) {
	m, err := learner.NewModel(g.Model.Arch, rand.New(rand.NewPCG(g.Model.Seed, 0)))
	if err != nil {
		return cid.Undef, gerr("model.arch", "%v", err)
	}
	if st == nil {
		st = storage.NewStore(dssync.MutexWrap(ds.NewMapDatastore()), nil)
	}
	c, err := st.PutCheckpoint(ctx, storage.Model{Arch: m.Arch.Name, Layers: StorageLayers(m.Arch), Params: m.Params}, storage.CheckpointMeta{})
	if err != nil {
		return cid.Undef, err
	}
	if g.Model.CID != "" && g.Model.CID != c.String() {
		return cid.Undef, gerr("model.cid", "%s, but the %s from seed %d is %s (a different genesis or murmur version)", g.Model.CID, g.Model.Arch, g.Model.Seed, c)
	}
	return c, nil
}

// StorageLayers is the storage view of an architecture's layers.
func StorageLayers(a learner.Arch) []storage.Layer {
	out := make([]storage.Layer, len(a.Layers))
	for i, l := range a.Layers {
		out[i] = storage.Layer{Name: l.Name, Shape: l.Shape}
	}
	return out
}
