package sim

import (
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	mh "github.com/multiformats/go-multihash"

	"github.com/murmur-ml/murmur/daemon"
	"github.com/murmur-ml/murmur/learner"
	"github.com/murmur-ml/murmur/storage"
)

// ErrConfig reports an invalid simulation setting.
var ErrConfig = errors.New("sim config")

// DP modes.
const (
	// DPUpdate is DESIGN.md §1.3's privatisation: clip the round's update to
	// Clip, add N(0, (Sigma·Clip)²) per coordinate. One Gaussian mechanism
	// per contributed round at sample rate 1 (the whole local dataset).
	DPUpdate = "update"
	// DPSample is DP-SGD during local training: per-example clipping to
	// Clip and noise Sigma·Clip on every Poisson-sampled batch. One sampled
	// Gaussian mechanism per local step at rate q = batch/local samples.
	DPSample = "sample"
)

// DP is the simulation's differential-privacy setting. Every honest peer
// runs its own accountant and records the ε it has spent.
type DP struct {
	Mode        string  // DPUpdate (default) or DPSample
	Clip, Sigma float64 // Sigma 0: derived from Epsilon
	Epsilon     float64 // target ε over all rounds, used when Sigma is 0
	Delta       float64 // δ at which ε is reported (default 1e-5)
	Budget      float64 // ε after which a peer stops contributing (0: none)
}

func (d *DP) delta() float64 {
	if d.Delta == 0 {
		return 1e-5
	}
	return d.Delta
}

// Config is one simulation.
type Config struct {
	Peers, Rounds int
	Model         string
	Partition     learner.Partition
	Train         learner.TrainConfig
	Agg           learner.AggConfig
	Byzantine     int
	Attack        learner.Attack
	DP            *DP // nil: no differential privacy
	Seed          uint64
	Workers       int       // concurrent local trainings (default GOMAXPROCS)
	HeadCAR       io.Writer // if set, the final head checkpoint is exported here as CAR v1
}

// DefaultConfig is `peer sim` with no flags: 8 peers, 2 of them flipping
// signs, trimmed mean, Dirichlet(0.5) label skew, the 2NN.
func DefaultConfig() Config {
	part, _ := learner.ParsePartition("dirichlet:0.5")
	atk, _ := learner.ParseAttack(learner.AttackSignFlip)
	return Config{
		Peers: 8, Rounds: 12, Model: learner.Arch2NN, Partition: part,
		// Server momentum 0.5 lifts the trimmed mean's plateau under label
		// skew (94.1% → 95.1% at 12 rounds, docs/figures.md).
		Train: learner.DefaultTrainConfig(), Agg: learner.AggConfig{Rule: learner.RuleTrimmedMean, ServerMomentum: 0.5},
		Byzantine: 2, Attack: atk, Seed: 1,
	}
}

// Validate reports the first unusable setting, including impossible
// combinations (a rule that cannot tolerate the Byzantine count, …).
func (c Config) Validate() error {
	switch {
	case c.Peers < 1:
		return fmt.Errorf("%w: --peers %d must be ≥ 1", ErrConfig, c.Peers)
	case c.Rounds < 1:
		return fmt.Errorf("%w: --rounds %d must be ≥ 1", ErrConfig, c.Rounds)
	case c.Byzantine < 0 || c.Byzantine >= c.Peers:
		return fmt.Errorf("%w: --byzantine %d must be in [0, peers=%d)", ErrConfig, c.Byzantine, c.Peers)
	case c.Byzantine > 0 && c.Attack.Name == learner.AttackNone:
		return fmt.Errorf("%w: --byzantine %d needs --attack NAME", ErrConfig, c.Byzantine)
	}
	if _, err := learner.ArchByName(c.Model); err != nil {
		return err
	}
	if err := c.Train.Validate(); err != nil {
		return err
	}
	if err := c.Agg.Validate(); err != nil {
		return err
	}
	if c.Agg.Rule == learner.RuleKrum {
		f := c.Agg.KrumF
		if f == 0 {
			f = (c.Peers - 3) / 2
		}
		if c.Peers <= 2*f+2 {
			return fmt.Errorf("%w: krum with f=%d needs more than %d peers, have %d", ErrConfig, f, 2*f+2, c.Peers)
		}
	}
	if c.DP != nil {
		if err := (learner.DPConfig{Clip: c.DP.Clip, Sigma: c.DP.Sigma}).Validate(); err != nil {
			return err
		}
		switch {
		case c.DP.Mode != "" && c.DP.Mode != DPUpdate && c.DP.Mode != DPSample:
			return fmt.Errorf("%w: DP mode %q (want update or sample)", ErrConfig, c.DP.Mode)
		case c.DP.Mode == DPSample && c.Model != learner.Arch2NN:
			return fmt.Errorf("%w: DP-SGD (--dp-mode sample) supports the 2nn only", ErrConfig)
		case c.DP.Sigma == 0 && !(c.DP.Epsilon > 0):
			return fmt.Errorf("%w: DP needs a noise multiplier or a target ε", ErrConfig)
		case c.DP.Sigma != 0 && c.DP.Epsilon != 0:
			return fmt.Errorf("%w: give the DP noise multiplier or the target ε, not both", ErrConfig)
		}
		if c.DP.Delta != 0 && !(c.DP.Delta > 0 && c.DP.Delta < 1) {
			return fmt.Errorf("%w: δ %v must be in (0,1)", ErrConfig, c.DP.Delta)
		}
	}
	return nil
}

// Metric is a float that may be NaN or infinite (a loss once an attack has
// ruined the model); JSON has no such numbers, so it encodes them as null.
type Metric float64

// MarshalJSON writes null for NaN and ±Inf.
func (m Metric) MarshalJSON() ([]byte, error) {
	f := float64(m)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return []byte("null"), nil
	}
	return json.Marshal(f)
}

// Round is what one round produced.
type Round struct {
	Round        int     `json:"round"`
	Accuracy     float64 `json:"accuracy"`
	Loss         Metric  `json:"loss"`
	TrainLoss    Metric  `json:"train_loss"` // mean over honest contributors
	Contributors int     `json:"contributors"`
	Diverged     int     `json:"diverged"` // honest peers whose local training diverged
	UpdateNorm   Metric  `json:"aggregate_norm"`
	Epsilon      float64 `json:"epsilon"` // largest ε spent by an honest peer
	HeadCID      string  `json:"head_cid"`
	HeadsAgree   bool    `json:"heads_agree"`
	BytesPerPeer int64   `json:"bytes_received_per_peer"`
	TrainSeconds float64 `json:"train_seconds"`
	AggSeconds   float64 `json:"aggregate_seconds"`
	EvalSeconds  float64 `json:"eval_seconds"`
	Seconds      float64 `json:"seconds"`
	// CommitRound is the consensus round that committed the height (full
	// stack; > 0 when a proposer failed or lied).
	CommitRound int32 `json:"commit_round"`
}

// Report is the outcome of a run.
type Report struct {
	Seed              uint64  `json:"seed"`
	Peers             int     `json:"peers"`
	Byzantine         int     `json:"byzantine"`
	ByzantinePeers    []int   `json:"byzantine_peers"`
	Attack            string  `json:"attack"`
	Aggregator        string  `json:"aggregator"`
	Partition         string  `json:"partition"`
	Model             string  `json:"model"`
	ModelParams       int     `json:"model_params"`
	ModelBytes        int     `json:"model_bytes"`
	RoundsCommitted   int     `json:"rounds_committed"`
	FinalAccuracy     float64 `json:"final_accuracy"`
	FinalLoss         Metric  `json:"final_loss"`
	HeadsAgree        bool    `json:"heads_agree"`
	HeadCID           string  `json:"head_cid"`
	BytesPerPeerRound int64   `json:"bytes_received_per_peer_per_round"`
	Epsilon           float64 `json:"epsilon,omitempty"`
	DPMode            string  `json:"dp_mode,omitempty"`
	DPSigma           float64 `json:"dp_sigma,omitempty"`
	Seconds           float64 `json:"seconds"`
	// HeapPerPeer is the Go heap a full-stack run added (live bytes at the
	// end, after a collection, minus before the peers started; the shared data
	// sets are not counted) divided by the number of peers. Store contents
	// are included: the simulator keeps each peer's blocks in memory.
	HeapPerPeer uint64 `json:"heap_bytes_per_peer,omitempty"`
	// Full stack misbehaviour: conflicting votes the equivocating
	// validators sent and the most any honest peer recorded as evidence;
	// invalid messages spammers sent and honest peers' validators rejected
	// (the rest were dropped unread once the spammers' scores sank).
	EquivocatingVotes int64 `json:"equivocating_votes,omitempty"`
	// AttackerViews is how many honest updates the omniscient attacks
	// (ALIE, IPM) forged from on the full stack, over all rounds.
	AttackerViews int64 `json:"attacker_views,omitempty"`
	// ProposalsWithheld counts the proposals silent validators did not send.
	ProposalsWithheld int64 `json:"proposals_withheld,omitempty"`
	// GossipLost counts gossip messages lost on links (Network.Loss and
	// per-link loss).
	GossipLost    int64   `json:"gossip_lost,omitempty"`
	Equivocations int     `json:"equivocations_detected,omitempty"`
	SpamSent      int64   `json:"spam_sent,omitempty"`
	SpamRejected  int64   `json:"spam_rejected,omitempty"`
	Rounds        []Round `json:"rounds"`
}

// peerRand derives a peer's generator for one purpose and round, so that the
// result does not depend on which goroutine trains which peer when.
func peerRand(seed uint64, peer, round int, purpose uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed^purpose*0x9e3779b97f4a7c15, uint64(peer)<<32|uint64(round)))
}

// Purposes of derived generators.
const (
	purposeInit = iota + 1
	purposePartition
	purposeTrain
	purposeNoise
	purposeAttack
	purposeOrder
	purposeRoles
	purposeTopology
	purposeLoss
)

// Run simulates cfg.Rounds rounds and returns the report. observe, if not
// nil, is called after each round.
func Run(ctx context.Context, cfg Config, train, test *learner.Dataset, observe func(Round)) (Report, error) {
	start := time.Now()
	if err := cfg.Validate(); err != nil {
		return Report{}, err
	}
	parts, err := cfg.Partition.Split(train.Labels, cfg.Peers, peerRand(cfg.Seed, 0, 0, purposePartition))
	if err != nil {
		return Report{}, err
	}
	peers := make([]*peer, cfg.Peers)
	for i := range peers {
		peers[i] = &peer{id: i, data: train.Subset(parts[i])}
	}
	roles := peerRand(cfg.Seed, 0, 0, purposeRoles).Perm(cfg.Peers)[:cfg.Byzantine]
	slices.Sort(roles)
	for _, i := range roles {
		peers[i].byzantine = true
		peers[i].data = cfg.Attack.Poison(peers[i].data)
	}
	if cfg.DP != nil {
		dp := *cfg.DP
		cfg.DP = &dp // Run may fill in Sigma; the caller's value stays as it was
		budget := dp.Budget
		if budget == 0 {
			budget = math.Inf(1)
		}
		for _, p := range peers {
			if p.budget, err = learner.NewBudget(budget, dp.delta()); err != nil {
				return Report{}, err
			}
			p.dpQ, p.dpSteps = 1, 1
			if dp.Mode == DPSample {
				p.dpQ, p.dpSteps = learner.DPSGDCost(cfg.Train, p.data.N())
			}
		}
		if dp.Sigma == 0 {
			// The smallest σ that keeps every honest peer within ε after
			// all rounds (peers with less data sample at a higher rate).
			for _, p := range peers {
				if p.byzantine {
					continue
				}
				s, err := learner.NoiseMultiplier(dp.Epsilon, dp.delta(), p.dpQ, cfg.Rounds*p.dpSteps)
				if err != nil {
					return Report{}, err
				}
				dp.Sigma = max(dp.Sigma, s)
			}
		}
	}
	global, err := learner.NewModel(cfg.Model, peerRand(cfg.Seed, 0, 0, purposeInit))
	if err != nil {
		return Report{}, err
	}
	rep := Report{
		Seed: cfg.Seed, Peers: cfg.Peers, Byzantine: cfg.Byzantine, ByzantinePeers: roles,
		Attack: cfg.Attack.Name, Aggregator: cfg.Agg.String(), Partition: cfg.Partition.String(),
		Model: cfg.Model, ModelParams: len(global.Params), ModelBytes: 4 * len(global.Params),
		HeadsAgree: true,
	}
	if cfg.DP != nil {
		rep.DPMode, rep.DPSigma = cmp.Or(cfg.DP.Mode, DPUpdate), cfg.DP.Sigma
	}
	workers := cfg.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	// Every model is stored as a real checkpoint (dag-cbor manifest over raw
	// shards), so head CIDs are the ones `peer inspect` reads.
	st := &chain{store: storage.NewStore(dssync.MutexWrap(ds.NewMapDatastore()), nil), layers: daemon.StorageLayers(global.Arch)}
	defer st.store.Close()
	if st.head, err = st.put(ctx, global, 0); err != nil {
		return rep, err
	}
	for r := 1; r <= cfg.Rounds; r++ {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		round, next, err := runRound(ctx, cfg, peers, global, st, r, workers)
		if err != nil {
			return rep, fmt.Errorf("round %d: %w", r, err)
		}
		st.parent, global = global.Params, next
		t := time.Now()
		ev, err := learner.Evaluate(global, test)
		if err != nil {
			return rep, err
		}
		round.EvalSeconds = time.Since(t).Seconds()
		round.Accuracy, round.Loss = ev.Accuracy, Metric(ev.Loss)
		round.Seconds = round.TrainSeconds + round.AggSeconds + round.EvalSeconds
		rep.Rounds = append(rep.Rounds, round)
		rep.RoundsCommitted = r
		rep.FinalAccuracy, rep.FinalLoss = ev.Accuracy, Metric(ev.Loss)
		rep.HeadCID = round.HeadCID
		rep.HeadsAgree = rep.HeadsAgree && round.HeadsAgree
		rep.BytesPerPeerRound = max(rep.BytesPerPeerRound, round.BytesPerPeer)
		rep.Epsilon = max(rep.Epsilon, round.Epsilon)
		if observe != nil {
			observe(round)
		}
	}
	if cfg.HeadCAR != nil {
		if _, err := st.store.ExportCAR(ctx, st.head, cfg.HeadCAR); err != nil {
			return rep, err
		}
	}
	rep.Seconds = time.Since(start).Seconds()
	return rep, nil
}

// chain is the simulation's model lineage: an in-memory store and its head.
type chain struct {
	store  *storage.Store
	layers []storage.Layer
	head   cid.Cid
	parent []float32 // the model before the head (server momentum)
}

// put stores m as the checkpoint of height h on top of the head.
func (c *chain) put(ctx context.Context, m *learner.Model, h int) (cid.Cid, error) {
	return c.store.PutCheckpoint(ctx, storage.Model{Arch: m.Arch.Name, Layers: c.layers, Params: m.Params},
		storage.CheckpointMeta{Height: uint64(h), Parent: c.head})
}

type peer struct {
	id        int
	byzantine bool
	data      *learner.Dataset
	budget    *learner.Budget // nil without DP
	dpQ       float64         // sampling rate of one accounted mechanism
	dpSteps   int             // mechanisms per round
	stopped   bool            // budget exhausted: no longer contributes
}

type trained struct {
	delta []float32
	loss  float64
	err   error
}

// runRound trains every contributing peer from global, forges the Byzantine
// updates, has every honest peer aggregate independently and checks that
// they agree.
func runRound(ctx context.Context, cfg Config, peers []*peer, global *learner.Model, st *chain, r, workers int) (Round, *learner.Model, error) {
	round := Round{Round: r}
	t0 := time.Now()
	out := make([]trained, len(peers))
	var wg sync.WaitGroup
	sem := make(chan struct{}, workers)
	for _, p := range peers {
		if p.stopped || (p.byzantine && !cfg.Attack.NeedsOwnTraining()) {
			continue
		}
		if p.budget != nil && !p.byzantine && !p.budget.CanSpend(cfg.DP.Sigma, p.dpQ, p.dpSteps) {
			p.stopped = true // says so in the round's contributor count
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func(p *peer) {
			defer func() { <-sem; wg.Done() }()
			local := global.Clone()
			rng := peerRand(cfg.Seed, p.id, r, purposeTrain)
			var st learner.TrainStats
			var err error
			if cfg.DP != nil && cfg.DP.Mode == DPSample && !p.byzantine {
				st, err = learner.TrainDP(local, p.data, cfg.Train, learner.DPConfig{Clip: cfg.DP.Clip, Sigma: cfg.DP.Sigma},
					rng, learner.NewNoiseRand(noiseSeed(cfg.Seed, p.id, r)))
			} else {
				st, err = learner.Train(local, p.data, cfg.Train, rng)
			}
			out[p.id] = trained{delta: learner.Delta(local.Params, global.Params), loss: st.Loss, err: err}
		}(p)
	}
	wg.Wait()
	round.TrainSeconds = time.Since(t0).Seconds()

	t1 := time.Now()
	var honest [][]float32
	var lossSum float64
	for _, p := range peers {
		if p.byzantine || p.stopped {
			continue
		}
		o := out[p.id]
		if errors.Is(o.err, learner.ErrDiverged) {
			// The shared model is already ruined (an attack got through):
			// this peer has nothing sound to send, and the run goes on so
			// that the report shows the damage.
			round.Diverged++
			continue
		}
		if o.err != nil {
			return round, nil, fmt.Errorf("peer %d: %w", p.id, o.err)
		}
		if cfg.DP != nil {
			if cfg.DP.Mode != DPSample {
				dp := learner.DPConfig{Clip: cfg.DP.Clip, Sigma: cfg.DP.Sigma}
				priv, err := learner.Privatize(o.delta, dp, learner.NewNoiseRand(noiseSeed(cfg.Seed, p.id, r)))
				if err != nil {
					return round, nil, err
				}
				o.delta = priv
			}
			if err := p.budget.Spend(cfg.DP.Sigma, p.dpQ, p.dpSteps); err != nil {
				return round, nil, err
			}
			round.Epsilon = max(round.Epsilon, p.budget.Spent())
		}
		out[p.id] = o
		honest = append(honest, o.delta)
		lossSum += o.loss
	}
	if len(honest) == 0 && round.Diverged == 0 {
		return round, nil, fmt.Errorf("%w: no honest peer can contribute (privacy budgets exhausted?)", ErrConfig)
	}
	round.TrainLoss = Metric(lossSum / float64(max(len(honest), 1)))
	n := len(honest) + cfg.Byzantine
	var ups []learner.Update
	for _, p := range peers {
		if p.stopped || (!p.byzantine && out[p.id].err != nil) {
			continue
		}
		d := out[p.id].delta
		if p.byzantine {
			d = cfg.Attack.Forge(d, honest, len(global.Params), n, cfg.Byzantine, peerRand(cfg.Seed, p.id, r, purposeAttack))
		}
		ups = append(ups, learner.Update{ID: updateID(p.id, d), Delta: d, Samples: p.data.N()})
	}
	round.Contributors = len(ups)
	// Drop malformed (non-finite) updates before aggregation, as gossip
	// validation will in the network.
	ups = slices.DeleteFunc(ups, func(u learner.Update) bool {
		return learner.ValidateUpdate(u, len(global.Params)) != nil
	})

	// Every honest peer aggregates on its own, with the inputs in the order
	// they happened to arrive; all must reach the same bytes. With no valid
	// input at all the model stays as it is.
	round.HeadsAgree = true
	if len(ups) == 0 {
		c, err := st.put(ctx, global, r)
		if err != nil {
			return round, nil, err
		}
		st.head, round.HeadCID = c, c.String()
		return round, global, nil
	}
	var next *learner.Model
	var nextCID cid.Cid
	for _, p := range peers {
		if p.byzantine {
			continue
		}
		arrival := slices.Clone(ups)
		peerRand(cfg.Seed, p.id, r, purposeOrder).Shuffle(len(arrival), func(i, j int) { arrival[i], arrival[j] = arrival[j], arrival[i] })
		agg, err := learner.Aggregate(cfg.Agg, arrival)
		if err != nil {
			return round, nil, err
		}
		m := &learner.Model{Arch: global.Arch, Params: learner.ApplyMomentum(global.Params, st.parent, agg, cfg.Agg.ServerMomentum)}
		c, err := st.put(ctx, m, r)
		if err != nil {
			return round, nil, err
		}
		if next == nil {
			next, nextCID, round.UpdateNorm = m, c, Metric(learner.L2Norm(agg))
		} else if c != nextCID {
			round.HeadsAgree = false
		}
	}
	st.head, round.HeadCID = nextCID, nextCID.String()
	round.AggSeconds = time.Since(t1).Seconds()
	// Each peer fetches every other contributor's update (dense float32):
	// the payload a dense-FedAvg peer receives per round.
	round.BytesPerPeer = int64(max(len(ups)-1, 0)) * int64(4*len(global.Params))
	return round, next, nil
}

// noiseSeed derives the ChaCha8 seed of a peer's DP noise for one round
// (a real peer seeds from crypto/rand instead).
func noiseSeed(seed uint64, peer, round int) *[32]byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	binary.LittleEndian.PutUint64(s[8:], uint64(peer))
	binary.LittleEndian.PutUint64(s[16:], uint64(round))
	return &s
}

// updateID names an update by the hash of its author and bytes, as the
// network names it by the CID of a manifest that includes the author: two
// colluding attackers sending the same vector are still two updates.
func updateID(author int, d []float32) string {
	var a [8]byte
	binary.LittleEndian.PutUint64(a[:], uint64(author))
	return rawCID(append(a[:], float32Bytes(d)...))
}

func float32Bytes(params []float32) []byte {
	buf := make([]byte, 4*len(params))
	for i, v := range params {
		binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(v))
	}
	return buf
}

func rawCID(buf []byte) string {
	h, err := mh.Sum(buf, mh.SHA2_256, -1)
	if err != nil {
		panic("sim: sha2-256 multihash: " + err.Error()) // a fixed, registered hash
	}
	return cid.NewCidV1(cid.Raw, h).String()
}
