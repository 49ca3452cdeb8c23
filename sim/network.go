package sim

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/murmur-ml/murmur/daemon"
	"github.com/murmur-ml/murmur/learner"
	"github.com/murmur-ml/murmur/node"
	"github.com/murmur-ml/murmur/p2p"
	"github.com/murmur-ml/murmur/storage"
)

// Network is the setting of a full-stack run that the learning-only Config
// does not have: the in-memory network's links, the round's timing, and a
// timeline of faults.
type Network struct {
	LatencyMs     int     `toml:"latency_ms"`     // one-way, every link
	BandwidthMbps float64 `toml:"bandwidth_mbps"` // per link (0: unlimited)
	TickMs        int     `toml:"tick_ms"`        // consensus tick (default 20)
	// WindowTicks is how long a proposer waits for updates at most, and the
	// propose timeout (default 1500 ticks = 30 s: every trainer normally
	// delivers long before, and blocks then hold exactly one update per
	// trainer, so the run is reproducible).
	WindowTicks int `toml:"window_ticks"`
	// Codec encodes updates (dense, int8 or topk; default dense) and TopK is
	// the kept fraction with topk (error feedback stays with each trainer).
	Codec string  `toml:"codec"`
	TopK  float64 `toml:"topk"`
	// Validators, if > 0, makes only peers 0..Validators-1 validators (every
	// peer trains): a committee, as a large deployment would run. 0: all.
	Validators int `toml:"validators"`
	// Degree, if > 0, connects each peer to every validator and to Degree
	// other peers drawn from the seed, instead of to every peer.
	Degree int `toml:"degree"`
	// Lying lists peers whose aggregates are wrong (a Byzantine proposer or
	// validator); they need not be among the attacking trainers.
	Lying []int `toml:"lying"`
	// EvalSamples, if > 0, evaluates each head on the first this many test
	// images instead of all: at scale the evaluation competes with the
	// peers for the cores.
	EvalSamples int `toml:"eval_samples"`
	// Loss is the fraction of gossip messages lost on every link (drawn
	// from the seed by the receiving peer; a message lost on one link may
	// still arrive over another). Mocknet streams are reliable, so block
	// transfers see a link's latency and bandwidth only: over TCP or QUIC,
	// loss costs time, not data.
	Loss float64 `toml:"loss"`
	// Links override latency, bandwidth and loss between two peers.
	Links []LinkSpec `toml:"link"`
	// Silent lists validators that never propose (they vote, train and
	// commit as usual): every height they should propose times out first.
	Silent []int `toml:"silent"`
	// Equivocating lists validators that sign a second, conflicting vote
	// beside each of their own (double signing).
	Equivocating []int `toml:"equivocating"`
	// Spammers is how many hosts outside the genesis flood the topics with
	// invalid messages, SpamRate messages a second each (default 20).
	Spammers int     `toml:"spammers"`
	SpamRate float64 `toml:"spam_rate"`
	// Late lists peers started only by a "join" event.
	Late   []int   `toml:"late"`
	Events []Event `toml:"event"`
	// Dir holds the peers' write-ahead logs and ledgers (default: a
	// temporary folder, removed at the end).
	Dir string       `toml:"-"`
	Log *slog.Logger `toml:"-"`
	// HeapProfile, if set, receives a heap profile at the end of the run,
	// while every peer is still up.
	HeapProfile io.Writer `toml:"-"`
}

// LinkSpec is one link's own latency, bandwidth and (if set) gossip loss,
// both directions.
type LinkSpec struct {
	A             int      `toml:"a"`
	B             int      `toml:"b"`
	LatencyMs     int      `toml:"latency_ms"`
	BandwidthMbps float64  `toml:"bandwidth_mbps"`
	Loss          *float64 `toml:"loss"`
}

// loss is the gossip loss on the link between peers a and b.
func (n Network) loss(a, b int) float64 {
	for _, l := range n.Links {
		if l.Loss != nil && (l.A == a && l.B == b || l.A == b && l.B == a) {
			return *l.Loss
		}
	}
	return n.Loss
}

// lossy reports whether any link loses gossip.
func (n Network) lossy() bool {
	if n.Loss > 0 {
		return true
	}
	for _, l := range n.Links {
		if l.Loss != nil && *l.Loss > 0 {
			return true
		}
	}
	return false
}

// Event is one step of a scenario's timeline: at committed height At, do
// Action to Peers. Actions: crash (stop without a word), restart (start
// again from its log, ledger and store), join (start a late peer),
// partition (cut Peers off from the rest), heal (restore every link).
type Event struct {
	At     int    `toml:"at"`
	Action string `toml:"action"`
	Peers  []int  `toml:"peers"`
}

// ErrScenario reports an unusable scenario.
var ErrScenario = errors.New("sim: scenario")

// Validate checks the network setting against the run's peers.
func (n Network) Validate(peers int) error {
	check := func(what string, ids []int) error {
		for _, i := range ids {
			if i < 0 || i >= peers {
				return fmt.Errorf("%w: %s names peer %d of %d", ErrScenario, what, i, peers)
			}
		}
		return nil
	}
	if err := errors.Join(check("lying", n.Lying), check("late", n.Late), check("equivocating", n.Equivocating), check("silent", n.Silent)); err != nil {
		return err
	}
	for k, e := range n.Events {
		switch e.Action {
		case "crash", "restart", "join", "partition", "heal":
		default:
			return fmt.Errorf("%w: event %d: action %q (want crash, restart, join, partition or heal)", ErrScenario, k, e.Action)
		}
		if err := check(fmt.Sprintf("event %d", k), e.Peers); err != nil {
			return err
		}
		if e.At < 0 {
			return fmt.Errorf("%w: event %d at height %d", ErrScenario, k, e.At)
		}
	}
	if n.LatencyMs < 0 || n.BandwidthMbps < 0 || n.TickMs < 0 || n.WindowTicks < 0 || n.Degree < 0 {
		return fmt.Errorf("%w: negative latency, bandwidth, tick, window or degree", ErrScenario)
	}
	if n.Validators < 0 || n.Validators > peers {
		return fmt.Errorf("%w: validators %d of %d peers", ErrScenario, n.Validators, peers)
	}
	for _, i := range slices.Concat(n.Lying, n.Equivocating, n.Silent) {
		if n.Validators > 0 && i >= n.Validators {
			return fmt.Errorf("%w: Byzantine validator %d is not a validator (validators are 0..%d)", ErrScenario, i, n.Validators-1)
		}
	}
	if n.EvalSamples < 0 {
		return fmt.Errorf("%w: eval_samples %d", ErrScenario, n.EvalSamples)
	}
	if !(n.Loss >= 0 && n.Loss < 1) {
		return fmt.Errorf("%w: loss %v must be in [0, 1)", ErrScenario, n.Loss)
	}
	for k, l := range n.Links {
		if err := check(fmt.Sprintf("link %d", k), []int{l.A, l.B}); err != nil {
			return err
		}
		if l.A == l.B || l.LatencyMs < 0 || l.BandwidthMbps < 0 || l.Loss != nil && !(*l.Loss >= 0 && *l.Loss < 1) {
			return fmt.Errorf("%w: link %d: %d–%d, latency %d ms, bandwidth %v Mbit/s, loss in [0, 1)", ErrScenario, k, l.A, l.B, l.LatencyMs, l.BandwidthMbps)
		}
	}
	if n.Spammers < 0 || n.SpamRate < 0 {
		return fmt.Errorf("%w: negative spammers or spam rate", ErrScenario)
	}
	return nil
}

// netPeer is one simulated peer across its runs.
type netPeer struct {
	i      int
	host   host.Host
	store  *storage.Store
	home   string
	data   *learner.Dataset
	byz    bool
	lying  bool
	equiv  bool
	silent bool
	priv   crypto.PrivKey
	reg    *prometheus.Registry // this run's metrics
	cur    *daemon.Peer
	cancel context.CancelFunc
	done   chan error
}

// RunNetwork runs cfg on the full stack: cfg.Peers complete murmur peers
// (daemon: node core and shell, consensus with write-ahead logs and
// ledgers, validating stores, gossipsub with validators, bitswap, the
// gorgonia trainer) over an in-memory libp2p network, until cfg.Rounds
// heights are committed. observe is told of each committed height.
func RunNetwork(ctx context.Context, cfg Config, nw Network, train, test *learner.Dataset, observe func(Round)) (Report, error) {
	start := time.Now()
	if err := cfg.Validate(); err != nil {
		return Report{}, err
	}
	if err := nw.Validate(cfg.Peers); err != nil {
		return Report{}, err
	}
	if nw.TickMs == 0 {
		nw.TickMs = 20
	}
	if nw.EvalSamples > 0 && nw.EvalSamples < test.N() {
		idx := make([]int, nw.EvalSamples)
		for i := range idx {
			idx[i] = i
		}
		test = test.Subset(idx)
	}
	if nw.WindowTicks == 0 {
		nw.WindowTicks = 1500
	}
	log := nw.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir := nw.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "murmur-sim-")
		if err != nil {
			return Report{}, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	// The heap before any peer exists (the data sets are shared, not the
	// peers' own): HeapPerPeer is what the run added, per peer.
	runtime.GC()
	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	parts, err := cfg.Partition.Split(train.Labels, cfg.Peers, peerRand(cfg.Seed, 0, 0, purposePartition))
	if err != nil {
		return Report{}, err
	}
	if cfg.DP != nil && cfg.DP.Sigma == 0 {
		// The smallest σ that keeps every peer within the target ε after all
		// rounds (with DP-SGD, peers with less data sample at a higher rate).
		// A peer pays when it releases an update, and it trains the next
		// height as soon as one commits: by the time the run stops it may
		// have released an update for height R+1 too.
		dp := *cfg.DP
		for _, part := range parts {
			q, steps := 1.0, 1
			if dp.Mode == DPSample {
				q, steps = learner.DPSGDCost(cfg.Train, len(part))
			}
			s, err := learner.NoiseMultiplier(dp.Epsilon, dp.delta(), q, (cfg.Rounds+1)*steps)
			if err != nil {
				return Report{}, err
			}
			dp.Sigma = max(dp.Sigma, s)
		}
		cfg.DP = &dp
	}
	roles := peerRand(cfg.Seed, 0, 0, purposeRoles).Perm(cfg.Peers)[:cfg.Byzantine]
	mn := mocknet.New()
	defer mn.Close()
	keys := rand.New(rand.NewChaCha8(seedBytes(cfg.Seed)))
	peers := make([]*netPeer, cfg.Peers)
	var vals []daemon.Validator
	var ids []string
	for i := range peers {
		priv, _, err := crypto.GenerateEd25519Key(chachaReader{keys})
		if err != nil {
			return Report{}, err
		}
		h, err := mn.AddPeer(priv, ma.StringCast(fmt.Sprintf("/ip4/10.%d.%d.%d/tcp/4001", i>>16&255, i>>8&255, i&255)))
		if err != nil {
			return Report{}, err
		}
		p := &netPeer{i: i, host: h, home: filepath.Join(dir, fmt.Sprintf("peer%d", i)), data: train.Subset(parts[i]),
			store: storage.NewStore(dssync.MutexWrap(ds.NewMapDatastore()), nil), byz: slices.Contains(roles, i), lying: slices.Contains(nw.Lying, i),
			equiv: slices.Contains(nw.Equivocating, i), silent: slices.Contains(nw.Silent, i), priv: priv}
		if p.byz {
			p.data = cfg.Attack.Poison(p.data)
		}
		peers[i] = p
		if nw.Validators == 0 || i < nw.Validators {
			vals = append(vals, daemon.Validator{ID: h.ID().String(), Power: 1})
		}
		ids = append(ids, h.ID().String())
	}
	var spams []*spammer
	for k := range nw.Spammers {
		priv, _, err := crypto.GenerateEd25519Key(chachaReader{keys})
		if err != nil {
			return Report{}, err
		}
		h, err := mn.AddPeer(priv, ma.StringCast(fmt.Sprintf("/ip4/11.0.%d.%d/tcp/4001", k>>8&255, k&255)))
		if err != nil {
			return Report{}, err
		}
		rate := nw.SpamRate
		if rate == 0 {
			rate = 20
		}
		spams = append(spams, &spammer{host: h, priv: priv, network: "sim", victim: ids[0], rate: rate,
			rng: peerRand(cfg.Seed, cfg.Peers+k, 0, purposeAttack), finished: make(chan struct{})})
	}
	opts := mocknet.LinkOptions{Latency: time.Duration(nw.LatencyMs) * time.Millisecond, Bandwidth: nw.BandwidthMbps * 1e6 / 8}
	mn.SetLinkDefaults(opts)
	if err := mn.LinkAll(); err != nil {
		return Report{}, err
	}
	for _, l := range nw.Links {
		for _, link := range mn.LinksBetweenPeers(peers[l.A].host.ID(), peers[l.B].host.ID()) {
			link.SetOptions(mocknet.LinkOptions{Latency: time.Duration(l.LatencyMs) * time.Millisecond, Bandwidth: l.BandwidthMbps * 1e6 / 8})
		}
	}

	g := daemon.DefaultGenesis("sim", vals)
	g.Trainers = ids
	g.Model.Arch, g.Model.Seed = cfg.Model, cfg.Seed
	a := cfg.Agg
	g.Aggregation = daemon.Aggregation{Rule: a.Rule, Trim: a.Trim, KrumF: a.KrumF, KrumM: a.KrumM, ClipTau: a.ClipTau, ClipIters: a.ClipIters, NormBound: a.NormBound, ServerMomentum: a.ServerMomentum, MaxSamples: a.MaxSamples}
	g.Round = daemon.RoundSpec{TickMillis: nw.TickMs, CollectTicks: nw.WindowTicks, TimeoutPropose: nw.WindowTicks, TimeoutPrevote: 50,
		TimeoutPrecommit: 50, TimeoutDelta: 25, RebroadcastTicks: 100, HeadTicks: 250, WaitAll: true}
	if cfg.DP != nil {
		budget := cfg.DP.Budget
		if budget == 0 {
			budget = 1e9
		}
		g.DP = &daemon.DPSpec{Mode: cfg.DP.Mode, Clip: cfg.DP.Clip, Sigma: cfg.DP.Sigma, Epsilon: budget, Delta: cfg.DP.delta()}
	}
	if nw.Codec != "" {
		g.Codec = daemon.CodecSpec{Name: nw.Codec, TopK: nw.TopK}
	}
	if err := g.Validate(); err != nil {
		return Report{}, err
	}
	genesis, err := g.GenesisModel(ctx, nil)
	if err != nil {
		return Report{}, err
	}
	arch, _ := learner.ArchByName(cfg.Model)

	run := &netRun{cfg: cfg, nw: nw, g: g, mn: mn, peers: peers, log: log, heads: map[uint64]map[int]string{}, cpus: make(chan struct{}, runtime.GOMAXPROCS(0)), board: newBoard(), train: map[uint64]float64{}, agg: map[uint64]float64{}, losses: map[uint64][]float64{},
		commits: make(chan timedCommit, 1024), arch: arch, errs: make(chan error, 4*len(peers))}
	defer run.stopAll()
	for _, p := range peers {
		if !slices.Contains(nw.Late, p.i) {
			if err := run.start(ctx, p); err != nil {
				return Report{}, err
			}
		}
	}

	spamCtx, stopSpam := context.WithCancel(ctx)
	var spamming []*spammer
	defer func() {
		stopSpam()
		for _, sp := range spamming {
			<-sp.finished
		}
	}()
	for _, sp := range spams {
		sp.height = run.height.Load
		for _, p := range peers {
			if _, err := mn.ConnectPeers(sp.host.ID(), p.host.ID()); err != nil {
				return Report{}, fmt.Errorf("sim: connecting a spammer: %w", err)
			}
		}
		spamming = append(spamming, sp)
		go func() {
			if err := sp.run(spamCtx); err != nil {
				run.errs <- err
			}
		}()
	}

	rep := Report{Seed: cfg.Seed, Peers: cfg.Peers, Byzantine: cfg.Byzantine, ByzantinePeers: slices.Sorted(slices.Values(roles)),
		Attack: cfg.Attack.Name, Aggregator: cfg.Agg.String(), Partition: cfg.Partition.String(), Model: cfg.Model,
		ModelParams: arch.NumParams(), ModelBytes: 4 * arch.NumParams(), HeadCID: genesis.String()}
	fired := make([]bool, len(nw.Events))
	fire := func(h int) error {
		for k, e := range nw.Events {
			if !fired[k] && e.At <= h {
				fired[k] = true
				log.Info("scenario", "height", h, "action", e.Action, "peers", e.Peers)
				if err := run.do(ctx, e); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := fire(0); err != nil {
		return rep, err
	}
	last := time.Now()
	var lastBytes int64
	var prev []float32
	for committed := 0; committed < cfg.Rounds; {
		var tc timedCommit
		select {
		case <-ctx.Done():
			return rep, ctx.Err()
		case err := <-run.errs:
			return rep, err
		case tc = <-run.commits:
		}
		c := tc.Commit
		if int(c.Height) <= committed {
			continue
		}
		committed = int(c.Height)
		run.height.Store(c.Height)
		// Commit to commit as the observer saw it (not when this loop got
		// to it: evaluating the previous head may have taken a while).
		r := Round{Round: committed, HeadCID: c.Block.Result.String(), Contributors: len(c.Block.Updates), Seconds: tc.at.Sub(last).Seconds(),
			CommitRound: c.Certificate.Round}
		last = tc.at
		evalStart := time.Now()
		_, m, err := run.headModel(ctx, c.Block.Result.Cid)
		if err != nil {
			return rep, err
		}
		ev, err := learner.Evaluate(&learner.Model{Arch: arch, Params: m.Params}, test)
		if err != nil {
			return rep, err
		}
		r.Accuracy, r.Loss, r.EvalSeconds = ev.Accuracy, Metric(ev.Loss), time.Since(evalStart).Seconds()
		bytes := run.bytesReceived()
		r.BytesPerPeer = (bytes - lastBytes) / int64(cfg.Peers)
		lastBytes = bytes
		r.HeadsAgree = run.agree(c.Height)
		run.mu.Lock()
		r.TrainSeconds = run.train[c.Height]
		r.AggSeconds = run.agg[c.Height]
		r.TrainLoss = Metric(meanOf(run.losses[c.Height]))
		run.mu.Unlock()
		if prev != nil {
			r.UpdateNorm = Metric(learner.L2Norm(learner.Delta(m.Params, prev)))
		}
		prev = m.Params
		r.Epsilon = run.epsilon()
		rep.Rounds = append(rep.Rounds, r)
		if observe != nil {
			observe(r)
		}
		if err := fire(committed); err != nil {
			return rep, err
		}
	}
	// Every running honest peer reaches the last height with the same head.
	final := uint64(cfg.Rounds)
	deadline := time.Now().Add(30 * time.Second)
	for !run.allAt(final) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	rep.RoundsCommitted = len(rep.Rounds)
	last2 := rep.Rounds[len(rep.Rounds)-1]
	rep.FinalAccuracy, rep.FinalLoss, rep.HeadCID = last2.Accuracy, last2.Loss, last2.HeadCID
	rep.HeadsAgree = run.allAt(final) && run.agreeAll()
	rep.BytesPerPeerRound = lastBytes / int64(cfg.Peers) / int64(rep.RoundsCommitted)
	rep.Epsilon = run.epsilon()
	if cfg.DP != nil {
		rep.DPMode, rep.DPSigma = cmp.Or(cfg.DP.Mode, DPUpdate), cfg.DP.Sigma
	}
	if cfg.HeadCAR != nil {
		if _, err := peers[run.observer()].store.ExportCAR(ctx, cid.MustParse(rep.HeadCID), cfg.HeadCAR); err != nil {
			return rep, err
		}
	}
	for _, sp := range spams {
		rep.SpamSent += sp.sent.Load()
	}
	for _, p := range peers {
		if p.cur != nil && p.faithful() {
			rep.SpamRejected += rejected(p.reg)
			rep.Equivocations = max(rep.Equivocations, p.cur.Status().Equivocations)
		}
	}
	rep.EquivocatingVotes = run.equivSent.Load()
	rep.AttackerViews = run.attackerSaw.Load()
	rep.GossipLost = run.lost.Load()
	rep.ProposalsWithheld = run.unsent.Load()
	// Measure with no training under way: the peers go on running (the
	// next height) and a training holds its graph and batches, hundreds of
	// MB that came and went with when the run happened to end (the same
	// run measured 121–251 MB per peer). Taking every training slot waits
	// for those running and holds back the rest until the peers stop.
	for range cap(run.cpus) {
		select {
		case run.cpus <- struct{}{}:
		case <-ctx.Done():
			return rep, ctx.Err()
		}
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	// Live bytes (HeapAlloc right after a collection), not HeapInuse, which
	// also counts free slots in the spans in use.
	if ms.HeapAlloc > ms0.HeapAlloc {
		rep.HeapPerPeer = (ms.HeapAlloc - ms0.HeapAlloc) / uint64(cfg.Peers)
	}
	if nw.HeapProfile != nil {
		if err := pprof.WriteHeapProfile(nw.HeapProfile); err != nil {
			return rep, err
		}
	}
	rep.Seconds = time.Since(start).Seconds()
	return rep, nil
}

type timedCommit struct {
	node.Commit
	at time.Time
}

type netRun struct {
	cfg         Config
	nw          Network
	g           *daemon.Genesis
	mn          mocknet.Mocknet
	peers       []*netPeer
	log         *slog.Logger
	arch        learner.Arch
	commits     chan timedCommit // the observer's commits, stamped when made
	mu          sync.Mutex
	heads       map[uint64]map[int]string // height → peer → head committed
	train       map[uint64]float64        // height → slowest local training, seconds
	agg         map[uint64]float64        // height → slowest re-execution of the rule, seconds
	losses      map[uint64][]float64      // height → honest peers' training losses
	errs        chan error
	obs         atomic.Int64
	height      atomic.Uint64 // the last height the run has seen committed
	cpus        chan struct{} // training slots, one per core
	board       *board        // honest deltas, for the omniscient attacks
	attackerSaw atomic.Int64
	lost        atomic.Int64 // gossip messages lost on links
	unsent      atomic.Int64 // proposals silent validators kept to themselves
	// running counts honest trainers that are up (the main goroutine
	// starts and stops peers; trainers read it).
	running atomic.Int64
	// equivSent counts the conflicting votes equivocating validators sent.
	equivSent atomic.Int64
}

// rejected sums the gossip messages a peer's validators rejected.
func rejected(reg *prometheus.Registry) int64 {
	fams, err := reg.Gather()
	if err != nil {
		return 0
	}
	var n float64
	for _, f := range fams {
		if f.GetName() != "murmur_p2p_gossip_messages_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "verdict" && l.GetValue() == "reject" {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return int64(n)
}

func (r *netRun) trained(height uint64, d time.Duration) {
	r.mu.Lock()
	r.train[height] = max(r.train[height], d.Seconds())
	r.mu.Unlock()
}

// observer is the honest running peer whose commits drive the run; the
// main goroutine recomputes it after every start and stop (setObserver),
// peers' commit callbacks read it.
func (r *netRun) observer() int { return int(r.obs.Load()) }

func (r *netRun) setObserver() {
	n := 0
	for _, p := range r.peers {
		if !p.byz && p.cur != nil {
			n++
		}
	}
	r.running.Store(int64(n))
	for _, p := range r.peers {
		if p.faithful() && p.cur != nil {
			r.obs.Store(int64(p.i))
			return
		}
	}
}

func (r *netRun) honestRunning() int { return int(r.running.Load()) }

// linkLoss draws, for peer p, whether a gossip message from a neighbour is
// lost on their link (seeded per peer; called from gossipsub's validation
// goroutines, hence the lock).
func (r *netRun) linkLoss(p *netPeer) func(from lpeer.ID) bool {
	index := make(map[lpeer.ID]int, len(r.peers))
	for _, q := range r.peers {
		index[q.host.ID()] = q.i
	}
	var mu sync.Mutex
	rng := peerRand(r.cfg.Seed, p.i, 0, purposeLoss)
	return func(from lpeer.ID) bool {
		q, ok := index[from]
		if !ok {
			return false // not a peer of the run (a spammer): its own fate
		}
		mu.Lock()
		lost := rng.Float64() < r.nw.loss(p.i, q)
		mu.Unlock()
		if lost {
			r.lost.Add(1)
		}
		return lost
	}
}

// faithful reports whether p follows the protocol in every role (it may
// still be crashed or cut off).
func (p *netPeer) faithful() bool { return !p.byz && !p.lying && !p.equiv && !p.silent }

func (r *netRun) start(ctx context.Context, p *netPeer) error {
	seed := *noiseSeed(r.cfg.Seed, p.i, 0)
	opts := []daemon.Option{daemon.WithHost(p.host), daemon.WithStore(p.store), daemon.WithData(p.data, nil),
		daemon.WithLogger(r.log.With("peer", p.i)), daemon.WithNoiseSeed(seed), daemon.WithFetchTimeout(20 * time.Second),
		daemon.WithTrainer(&simTrainer{inner: &daemon.Trainer{Arch: r.arch, Data: p.data, Config: r.cfg.Train,
			Seed: r.cfg.Seed ^ uint64(p.i)*0x9e3779b97f4a7c15, Observe: func(h uint64, st learner.TrainStats) {
				if !p.byz {
					r.mu.Lock()
					r.losses[h] = append(r.losses[h], st.Loss)
					r.mu.Unlock()
				}
			}}, byz: p.byz, cpus: r.cpus, board: r.board, honest: r.honestRunning, seen: &r.attackerSaw, attack: r.cfg.Attack, seed: r.cfg.Seed, peer: p.i, n: r.cfg.Peers, f: r.cfg.Byzantine, took: r.trained}),
		daemon.WithOnAggregate(func(h uint64, _ int, took time.Duration) {
			r.mu.Lock()
			r.agg[h] = max(r.agg[h], took.Seconds())
			r.mu.Unlock()
		}),
		daemon.WithOnCommit(func(c node.Commit) {
			r.mu.Lock()
			if r.heads[c.Height] == nil {
				r.heads[c.Height] = map[int]string{}
			}
			r.heads[c.Height][p.i] = c.Block.Result.String()
			r.mu.Unlock()
			if p.i == r.observer() {
				select {
				case r.commits <- timedCommit{c, time.Now()}:
				default:
				}
			}
		})}
	if p.lying {
		opts = append(opts, daemon.WithStoreWrapper(func(s node.Store) node.Store { return lyingStore{s} }))
	}
	// Network wrappers, innermost first: a double-signing validator's
	// second votes go out, and loss applies to what comes in.
	var wraps []func(node.Network) node.Network
	if p.equiv {
		signer, err := p2p.NewKeySigner(p.priv)
		if err != nil {
			return err
		}
		wraps = append(wraps, func(n node.Network) node.Network {
			return equivocatingNet{Network: n, network: r.g.Network, signer: signer, sent: &r.equivSent}
		})
	}
	if p.silent {
		wraps = append(wraps, func(n node.Network) node.Network { return silentNet{Network: n, dropped: &r.unsent} })
	}
	if r.nw.lossy() {
		opts = append(opts, daemon.WithGossipLoss(r.linkLoss(p)))
	}
	if len(wraps) > 0 {
		opts = append(opts, daemon.WithNetworkWrapper(func(n node.Network) node.Network {
			for _, w := range wraps {
				n = w(n)
			}
			return n
		}))
	}
	p.reg = prometheus.NewRegistry()
	opts = append(opts, daemon.WithRegistry(p.reg))
	cfg := daemon.DefaultConfig()
	cfg.Data.EvalSamples = 0
	cfg.Storage.Sync = false
	dp, err := daemon.New(ctx, p.home, cfg, r.g, opts...)
	if err != nil {
		return fmt.Errorf("sim: peer %d: %w", p.i, err)
	}
	for _, q := range r.neighbours(p) {
		if q.cur != nil {
			if _, err := r.mn.ConnectPeers(p.host.ID(), q.host.ID()); err != nil && !errors.Is(err, context.Canceled) {
				r.log.Debug("connect", "err", err)
			}
		}
	}
	pctx, cancel := context.WithCancel(ctx)
	p.cur, p.cancel, p.done = dp, cancel, make(chan error, 1)
	r.setObserver()
	errs := r.errs
	go func() {
		err := dp.Run(pctx)
		p.done <- err
		if err != nil {
			errs <- fmt.Errorf("sim: peer %d: %w", p.i, err)
		}
	}()
	return nil
}

// neighbours are the peers p connects to when it starts: every other peer,
// or with a degree every validator and Degree others drawn from the seed
// (peers that start later connect to p by their own draw).
func (r *netRun) neighbours(p *netPeer) []*netPeer {
	var out []*netPeer
	if r.nw.Degree == 0 {
		for _, q := range r.peers {
			if q != p {
				out = append(out, q)
			}
		}
		return out
	}
	pick := map[int]bool{}
	for i := range r.nw.Validators {
		pick[i] = true
	}
	rng := peerRand(r.cfg.Seed, p.i, 0, purposeTopology)
	for _, i := range rng.Perm(len(r.peers))[:min(r.nw.Degree+1, len(r.peers))] {
		pick[i] = true
	}
	delete(pick, p.i)
	for _, i := range slices.Sorted(maps.Keys(pick)) {
		out = append(out, r.peers[i])
	}
	return out
}

func (r *netRun) stop(p *netPeer) {
	if p.cur == nil {
		return
	}
	p.cancel()
	<-p.done
	p.cur = nil
	r.setObserver()
	for _, q := range p.host.Network().Peers() {
		_ = p.host.Network().ClosePeer(q)
	}
}

func (r *netRun) stopAll() {
	for _, p := range r.peers {
		r.stop(p)
	}
}

func (r *netRun) do(ctx context.Context, e Event) error {
	switch e.Action {
	case "crash":
		for _, i := range e.Peers {
			r.stop(r.peers[i])
		}
	case "restart", "join":
		for _, i := range e.Peers {
			if r.peers[i].cur == nil {
				if err := r.start(ctx, r.peers[i]); err != nil {
					return err
				}
			}
		}
	case "partition":
		cut := map[int]bool{}
		for _, i := range e.Peers {
			cut[i] = true
		}
		for _, a := range r.peers {
			for _, b := range r.peers {
				if a.i < b.i && cut[a.i] != cut[b.i] {
					_ = r.mn.UnlinkPeers(a.host.ID(), b.host.ID())
					_ = r.mn.DisconnectPeers(a.host.ID(), b.host.ID())
				}
			}
		}
	case "heal":
		if err := r.mn.LinkAll(); err != nil {
			return err
		}
		for _, a := range r.peers {
			for _, b := range r.peers {
				if a.i < b.i && a.cur != nil && b.cur != nil && a.host.Network().Connectedness(b.host.ID()) != 1 {
					_, _ = r.mn.ConnectPeers(a.host.ID(), b.host.ID())
				}
			}
		}
	}
	return nil
}

func (r *netRun) headModel(ctx context.Context, c cid.Cid) (*storage.Checkpoint, storage.Model, error) {
	var lastErr error
	for _, p := range r.peers {
		ck, m, err := p.store.GetCheckpoint(ctx, c)
		if err == nil {
			return ck, m, nil
		}
		lastErr = err
	}
	return nil, storage.Model{}, lastErr
}

func (r *netRun) bytesReceived() int64 {
	var n int64
	for _, p := range r.peers {
		if p.cur == nil {
			continue
		}
		n += p.cur.BlockBytesReceived()
	}
	return n
}

// agree reports whether every peer that committed h committed the same head.
func (r *netRun) agree(h uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	var want string
	for _, c := range r.heads[h] {
		if want == "" {
			want = c
		} else if c != want {
			return false
		}
	}
	return true
}

func (r *netRun) agreeAll() bool {
	r.mu.Lock()
	hs := make([]uint64, 0, len(r.heads))
	for h := range r.heads {
		hs = append(hs, h)
	}
	r.mu.Unlock()
	for _, h := range hs {
		if !r.agree(h) {
			return false
		}
	}
	return true
}

// allAt reports whether every running honest peer committed height h.
func (r *netRun) allAt(h uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.peers {
		if p.cur == nil || p.lying {
			continue
		}
		if _, ok := r.heads[h][p.i]; !ok {
			return false
		}
	}
	return true
}

func (r *netRun) epsilon() float64 {
	var e float64
	for _, p := range r.peers {
		if p.cur != nil && !p.byz {
			e = max(e, p.cur.Status().EpsilonSpent)
		}
	}
	return e
}

func meanOf(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

// simTrainer is a peer's local training, and for a Byzantine peer its
// attack on the result.
type simTrainer struct {
	inner  *daemon.Trainer
	cpus   chan struct{} // shared by all peers: one training per core
	board  *board
	honest func() int    // honest trainers running now
	seen   *atomic.Int64 // honest updates the adversary forged from
	byz    bool
	attack learner.Attack
	seed   uint64
	peer   int
	n, f   int
	took   func(uint64, time.Duration)
}

// board is where the simulated adversary learns the honest updates of a
// height before forging its own: ALIE and IPM assume an omniscient,
// colluding attacker (it could also fetch them over the network, as any
// peer can, once announced). Honest trainers post their raw deltas.
type board struct {
	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every post
	deltas  map[uint64]map[int][]float32
}

func newBoard() *board {
	return &board{changed: make(chan struct{}), deltas: map[uint64]map[int][]float32{}}
}

func (b *board) post(height uint64, peer int, delta []float32) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.deltas[height] == nil {
		b.deltas[height] = map[int][]float32{}
	}
	b.deltas[height][peer] = delta
	delete(b.deltas, height-3) // nobody forges that far back
	close(b.changed)
	b.changed = make(chan struct{})
}

// wait returns the honest deltas of height once want of them are posted,
// or what is there when patience runs out (the run goes on: a trainer
// that crashed never posts).
func (b *board) wait(ctx context.Context, height uint64, want int, patience time.Duration) [][]float32 {
	deadline := time.After(patience)
	for {
		b.mu.Lock()
		got, ch := b.deltas[height], b.changed
		if len(got) >= want {
			out := make([][]float32, 0, len(got))
			for _, k := range slices.Sorted(maps.Keys(got)) {
				out = append(out, got[k])
			}
			b.mu.Unlock()
			return out
		}
		b.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			want = 0
		case <-ctx.Done():
			return nil
		}
	}
}

func (t *simTrainer) Train(ctx context.Context, height uint64, base []float32) ([]float32, int, error) {
	return t.run(ctx, height, func() ([]float32, int, error) { return t.inner.Train(ctx, height, base) })
}

// TrainPrivate is DP-SGD for an honest peer; the adversary ignores privacy.
func (t *simTrainer) TrainPrivate(ctx context.Context, height uint64, base []float32, dp learner.DPConfig, noise *rand.Rand) ([]float32, int, error) {
	return t.run(ctx, height, func() ([]float32, int, error) {
		if t.byz {
			return t.inner.Train(ctx, height, base)
		}
		return t.inner.TrainPrivate(ctx, height, base, dp, noise)
	})
}

// Cost is what one DP-SGD update of this peer spends.
func (t *simTrainer) Cost() (float64, int) { return t.inner.Cost() }

func (t *simTrainer) run(ctx context.Context, height uint64, train func() ([]float32, int, error)) ([]float32, int, error) {
	// The simulated peers share this machine's cores: trainings beyond
	// one per core would only interleave, each holding its graph and
	// batches in memory meanwhile. The time waited is not training time.
	select {
	case t.cpus <- struct{}{}:
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	}
	start := time.Now()
	delta, samples, err := train()
	t.took(height, time.Since(start))
	<-t.cpus
	if err != nil {
		return delta, samples, err
	}
	if !t.byz {
		t.board.post(height, t.peer, delta)
		return delta, samples, nil
	}
	var honest [][]float32
	if t.attack.Omniscient() {
		honest = t.board.wait(ctx, height, t.honest(), 60*time.Second)
		t.seen.Add(int64(len(honest)))
	}
	return t.attack.Forge(delta, honest, len(delta), t.n, t.f, peerRand(t.seed, t.peer, int(height), purposeAttack)), samples, nil
}

// lyingStore stores a wrong aggregate: every checkpoint above genesis that
// this peer computes is shifted, so its proposals carry a result no honest
// validator reproduces and its votes refuse honest blocks.
type lyingStore struct{ node.Store }

func (l lyingStore) PutCheckpoint(ctx context.Context, m storage.Model, meta storage.CheckpointMeta) (cid.Cid, error) {
	if meta.Height > 0 {
		p := slices.Clone(m.Params)
		for i := range p {
			p[i] += 0.01
		}
		m.Params = p
	}
	return l.Store.PutCheckpoint(ctx, m, meta)
}

// chachaReader turns a seeded generator into the io.Reader key generation
// wants, so that peer identities (and so every signature and CID) follow
// from the seed.
type chachaReader struct{ r *rand.Rand }

func (c chachaReader) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = byte(c.r.Uint32())
	}
	return len(b), nil
}

func seedBytes(seed uint64) [32]byte {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	s[8] = 'k'
	return s
}
