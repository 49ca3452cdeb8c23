package daemon

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/boxo/bitswap"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/metrics"
	libnet "github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/murmur-ml/murmur/consensus"
	"github.com/murmur-ml/murmur/consensus/ledger"
	"github.com/murmur-ml/murmur/consensus/wal"
	"github.com/murmur-ml/murmur/learner"
	"github.com/murmur-ml/murmur/node"
	"github.com/murmur-ml/murmur/p2p"
	"github.com/murmur-ml/murmur/shard"
	"github.com/murmur-ml/murmur/storage"
)

// Option configures New. Without options a peer makes everything from its
// home: key, TCP/QUIC host, DHT, LevelDB store, MNIST from the config.
type Option func(*options)

type options struct {
	host       host.Host
	store      *storage.Store
	train      *learner.Dataset
	test       *learner.Dataset
	log        *slog.Logger
	noiseSeed  *[32]byte
	trainer    node.Trainer
	reg        *prometheus.Registry
	fetch      time.Duration
	onCommit   func(node.Commit)
	onAgg      func(height uint64, updates int, took time.Duration)
	noDiscover bool
	wrapStore  func(node.Store) node.Store
	wrapNet    func(node.Network) node.Network
	gossipDrop func(from peer.ID) bool
}

// WithHost runs the peer on an existing host (an in-memory mocknet host in
// tests and the simulator): no DHT, mDNS or bandwidth counting; the caller
// connects it and closes it.
func WithHost(h host.Host) Option { return func(o *options) { o.host, o.noDiscover = h, true } }

// WithStore uses an existing store (the caller closes it).
func WithStore(s *storage.Store) Option { return func(o *options) { o.store = s } }

// WithData gives the peer its training share and test set directly
// instead of loading MNIST (the simulator loads it once for all peers).
func WithData(train, test *learner.Dataset) Option {
	return func(o *options) { o.train, o.test = train, test }
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithNoiseSeed makes DP noise reproducible (the simulator); peers on a
// real network draw it from crypto/rand so nobody can subtract it.
func WithNoiseSeed(seed [32]byte) Option { return func(o *options) { o.noiseSeed = &seed } }

// WithTrainer replaces local MNIST training (the simulator's attackers).
func WithTrainer(t node.Trainer) Option { return func(o *options) { o.trainer = t } }

// WithRegistry registers the peer's metrics there (default: a new one).
func WithRegistry(r *prometheus.Registry) Option { return func(o *options) { o.reg = r } }

// WithFetchTimeout bounds one DAG fetch (default 60 s).
func WithFetchTimeout(d time.Duration) Option { return func(o *options) { o.fetch = d } }

// WithStoreWrapper puts w between the node and its store: the simulator's
// Byzantine peers use it to store wrong aggregates (a lying proposer, a
// validator that rejects honest blocks).
func WithStoreWrapper(w func(node.Store) node.Store) Option {
	return func(o *options) { o.wrapStore = w }
}

// WithNetworkWrapper puts w between the node and the network: the
// simulator's equivocating validator uses it to send a second, conflicting
// vote beside each of its own.
func WithNetworkWrapper(w func(node.Network) node.Network) Option {
	return func(o *options) { o.wrapNet = w }
}

// WithGossipLoss drops each gossip message that arrives from neighbour from
// when drop says so, before it is validated or relayed: the simulator's
// lossy links (the same message may still arrive over another one). drop
// is called from gossipsub's validation goroutines.
func WithGossipLoss(drop func(from peer.ID) bool) Option {
	return func(o *options) { o.gossipDrop = drop }
}

// WithOnAggregate is told how long each re-execution of the aggregation
// rule took (from a background goroutine).
func WithOnAggregate(f func(height uint64, updates int, took time.Duration)) Option {
	return func(o *options) { o.onAgg = f }
}

// WithOnCommit is told of every commit, after it is stored.
func WithOnCommit(f func(node.Commit)) Option { return func(o *options) { o.onCommit = f } }

// Status is what peer status prints (GET /status).
type Status struct {
	Network            string   `json:"network"`
	PeerID             string   `json:"peer_id"`
	Role               string   `json:"role"`
	Height             uint64   `json:"height"` // last committed height (0: genesis)
	HeadCID            string   `json:"head_cid"`
	Round              int32    `json:"round"` // consensus round at height+1
	Peers              int      `json:"peers"`
	LastCommitUnix     int64    `json:"last_commit_unix"`
	TestAccuracy       *float64 `json:"test_accuracy"` // of the head model; null until measured
	AccuracyHeight     uint64   `json:"test_accuracy_height"`
	BytesIn            int64    `json:"bytes_in"`
	BytesOut           int64    `json:"bytes_out"`
	Updates            int      `json:"updates_in_head"`
	EpsilonSpent       float64  `json:"epsilon_spent,omitempty"`
	PrivacyExhausted   bool     `json:"privacy_exhausted,omitempty"`
	Equivocations      int      `json:"equivocations"`
	StartedUnix        int64    `json:"started_unix"`
	Addrs              []string `json:"addrs"`
	GenesisCID         string   `json:"genesis_cid"`
	RestoredFromHeight uint64   `json:"restored_from_height"`
}

// Peer is one running murmur peer: host, gossip, bitswap, store,
// write-ahead log, ledger, trainer and the node shell, wired.
type Peer struct {
	home string
	cfg  Config
	gen  *Genesis
	o    options
	log  *slog.Logger
	priv crypto.PrivKey
	id   peer.ID
	ver  *p2p.CachedVerifier // shared by gossip validators and the core
	// direct counts block bytes fetched from update authors (not bitswap).
	direct atomic.Int64
	host   host.Host
	bw     *metrics.BandwidthCounter
	store  *storage.Store
	wal    *wal.WAL
	led    *ledger.Ledger
	gsp    *p2p.Gossip
	bsw    *bitswap.Bitswap
	disc   *p2p.Discovery
	shell  *node.Shell
	reg    *prometheus.Registry
	m      *peerMetrics
	test   *learner.Dataset
	arch   learner.Arch

	height  atomic.Uint64 // the height being decided (gossip validators read it)
	mu      sync.Mutex    // guards status, commits and blocks
	status  Status
	commits [][]byte         // encoded commits by height-1, served to peers catching up
	blocks  []*storage.Block // their blocks, decoded once (the store's collections read them)
	evalCh  chan cid.Cid
	gcCh    chan uint64 // committed heights to collect the store at
	closers []func() error
	// life bounds the network components' background work (gossipsub,
	// bitswap, DHT): cancelled on close, so a peer restarted on the same
	// host leaves nothing of its previous run attached to it.
	life   context.Context
	cancel context.CancelFunc
}

// New opens (or creates) everything a peer needs under home and restores
// it to where its last run ended: the ledger repaired from the write-ahead
// log, the consensus machine from the log, the privacy budget from its
// record. Nothing is sent until Run.
func New(ctx context.Context, home string, cfg Config, gen *Genesis, opts ...Option) (_ *Peer, err error) {
	p := &Peer{home: home, cfg: cfg, gen: gen, evalCh: make(chan cid.Cid, 1), gcCh: make(chan uint64, 1)}
	p.life, p.cancel = context.WithCancel(context.WithoutCancel(ctx))
	p.closers = append(p.closers, func() error { p.cancel(); return nil })
	p.o.fetch = 60 * time.Second
	for _, f := range opts {
		f(&p.o)
	}
	p.log = p.o.log
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	defer func() {
		if err != nil {
			p.close()
		}
	}()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := gen.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(home, "data"), 0o700); err != nil {
		return nil, err
	}
	if err := p.openHost(); err != nil {
		return nil, err
	}
	p.ver = p2p.NewCachedVerifier(4096)
	p.reg = p.o.reg
	if p.reg == nil {
		p.reg = prometheus.NewRegistry()
	}
	if p.m, err = newPeerMetrics(p.reg); err != nil {
		return nil, err
	}
	if p.store = p.o.store; p.store == nil {
		if p.store, err = storage.Open(filepath.Join(home, "store"), storage.WithSync(cfg.Storage.Sync), storage.WithLogger(p.log)); err != nil {
			return nil, err
		}
		p.closers = append(p.closers, p.store.Close)
	}
	genesis, err := gen.GenesisModel(ctx, p.store)
	if err != nil {
		return nil, err
	}
	if err := p.store.Pin(ctx, genesis, 0); err != nil {
		return nil, err
	}
	arch, _ := learner.ArchByName(gen.Model.Arch)
	p.arch = arch
	core, records, err := p.restore(ctx, genesis)
	if err != nil {
		return nil, err
	}
	if err := p.openNetwork(p.life); err != nil {
		return nil, err
	}
	if err := p.makeShell(core); err != nil {
		return nil, err
	}
	released, err := p.readReleased()
	if err != nil {
		return nil, err
	}
	if err := p.shell.Restore(released); err != nil {
		return nil, err
	}
	p.status = Status{Network: gen.Network, PeerID: p.id.String(), Role: role(core), Height: core.Height() - 1,
		HeadCID: core.Head().String(), GenesisCID: genesis.String(), RestoredFromHeight: core.Height() - 1, StartedUnix: time.Now().Unix()}
	if p.shell.Privacy != nil {
		p.status.EpsilonSpent = p.shell.Privacy.Budget.Spent()
	}
	p.height.Store(core.Height())
	p.log.Info("peer ready", "peer", p.id, "role", p.status.Role, "height", core.Height()-1, "head", core.Head(),
		"log_records", len(records), "network", gen.Network)
	return p, nil
}

func role(c *node.Core) string {
	v, t := c.IsValidator(), c.IsTrainer()
	switch {
	case v && t:
		return "validator+trainer"
	case v:
		return "validator"
	case t:
		return "trainer"
	}
	return "observer"
}

func (p *Peer) openHost() error {
	if p.o.host != nil {
		p.host, p.id = p.o.host, p.o.host.ID()
		p.priv = p.host.Peerstore().PrivKey(p.id)
		if p.priv == nil {
			return fmt.Errorf("daemon: the given host has no private key for %s", p.id)
		}
		return nil
	}
	priv, err := p2p.LoadOrCreateKey(Path(p.home, p.cfg.Key))
	if err != nil {
		return fmt.Errorf("%w: key: %w", ErrConfig, err)
	}
	p.priv = priv
	p.bw = metrics.NewBandwidthCounter()
	opts := []p2p.HostOption{p2p.WithListen(p.cfg.P2P.Listen...), p2p.WithBandwidth(p.bw), p2p.WithMaxConns(p.cfg.P2P.MaxConns)}
	if p.gen.PSK != "" {
		psk, _ := hex.DecodeString(p.gen.PSK)
		opts = append(opts, p2p.WithPSK(psk))
	}
	if len(p.gen.Trainers) > 0 {
		var ids []peer.ID
		for _, s := range append(p.gen.Trainers, validatorIDs(p.gen)...) {
			id, _ := peer.Decode(s)
			ids = append(ids, id)
		}
		opts = append(opts, p2p.WithGater(p2p.NewAllowlist(ids...)))
	}
	if p.cfg.P2P.NAT {
		opts = append(opts, p2p.WithNATTraversal())
	}
	h, err := p2p.NewHost(priv, opts...)
	if err != nil {
		return err
	}
	p.host, p.id = h, h.ID()
	p.closers = append(p.closers, h.Close)
	return nil
}

func validatorIDs(g *Genesis) []string {
	out := make([]string, len(g.Validators))
	for i, v := range g.Validators {
		out[i] = v.ID
	}
	return out
}

// restore opens the log and the ledger, appends to the ledger any commit
// the log holds beyond it (a crash between the two writes), and builds the
// core at the ledger's head.
func (p *Peer) restore(ctx context.Context, genesis cid.Cid) (*node.Core, []consensus.Record, error) {
	w, raw, repair, err := wal.Open(filepath.Join(p.home, "data", "wal"))
	if err != nil {
		return nil, nil, fmt.Errorf("daemon: write-ahead log: %w", err)
	}
	p.wal = w
	p.closers = append(p.closers, w.Close)
	if repair.TornBytes > 0 {
		p.log.Warn("write-ahead log had a torn tail (a crash mid-write); cut it", "bytes", repair.TornBytes)
	}
	records := make([]consensus.Record, 0, len(raw))
	for i, b := range raw {
		r, err := consensus.DecodeRecord(b)
		if err != nil {
			return nil, nil, fmt.Errorf("daemon: write-ahead log record %d: %w", i, err)
		}
		records = append(records, r)
	}
	vs, _ := p.gen.ValidatorSet()
	led, err := ledger.Open(filepath.Join(p.home, "data", "ledger"), p.gen.Network, vs, p2p.PeerVerifier{})
	if err != nil {
		return nil, nil, fmt.Errorf("daemon: ledger: %w", err)
	}
	p.led = led
	p.closers = append(p.closers, led.Close)
	for _, r := range records {
		if r.Commit != nil && r.Commit.Certificate.Height == led.Height()+1 {
			if err := led.Append(*r.Commit); err != nil {
				return nil, nil, fmt.Errorf("daemon: repairing the ledger from the log: %w", err)
			}
			p.log.Warn("ledger was behind the write-ahead log; appended", "height", led.Height())
		}
	}
	head := genesis
	for h := uint64(1); h <= led.Height(); h++ {
		c, _ := led.Commit(h)
		p.commits = append(p.commits, consensus.Encode(&c))
		obj, err := storage.Decode(c.Value)
		blk, ok := obj.(*storage.Block)
		if err != nil || !ok {
			return nil, nil, fmt.Errorf("daemon: ledger height %d holds no block: %v", h, err)
		}
		p.blocks = append(p.blocks, blk)
		head = blk.Result.Cid
	}
	id := p.id.String()
	cc, _ := p.gen.ConsensusConfig()
	expected := 0
	if p.gen.Round.WaitAll {
		expected = len(p.gen.Trainers)
	}
	signer, err := p2p.NewKeySigner(p.priv)
	if err != nil {
		return nil, nil, err
	}
	core, err := node.New(node.Config{Network: p.gen.Network, Self: id, Validator: p.gen.IsValidator(id),
		Trainer: p.gen.MayTrain(id) && p.cfg.Train.Enabled, Rule: p.gen.Aggregation.Rule,
		CollectTicks: p.gen.Round.CollectTicks, ActiveWindow: 2, ExpectedUpdates: expected, Consensus: cc}, genesis, signer, p.ver)
	if err != nil {
		return nil, nil, err
	}
	if err := core.Restore(led.Height(), head, records); err != nil {
		return nil, nil, err
	}
	return core, records, nil
}

func (p *Peer) openNetwork(ctx context.Context) error {
	cc, _ := p.gen.ConsensusConfig()
	check := func(_ context.Context, _ peer.ID, b []byte) p2p.Verdict {
		switch consensus.CheckGossip(cc, p.ver, p.height.Load(), b) {
		case consensus.GossipAccept:
			return p2p.Accept
		case consensus.GossipIgnore:
			return p2p.Ignore
		}
		return p2p.Reject
	}
	validators := map[string]p2p.Validator{
		p2p.TopicUpdates:   &p2p.AnnouncementPolicy{Network: p.gen.Network, Height: p.height.Load, Admit: p.admit, Verifier: p.ver},
		p2p.TopicConsensus: p2p.ValidatorFunc(check),
		p2p.TopicHeads: p2p.ValidatorFunc(func(ctx context.Context, from peer.ID, b []byte) p2p.Verdict {
			if msg, err := consensus.Decode(b); err != nil {
				return p2p.Reject
			} else if _, ok := msg.(*consensus.Commit); !ok {
				return p2p.Reject // only commits travel on the heads topic
			}
			return check(ctx, from, b)
		}),
	}
	if drop := p.o.gossipDrop; drop != nil {
		for k, v := range validators {
			validators[k] = p2p.ValidatorFunc(func(ctx context.Context, from peer.ID, b []byte) p2p.Verdict {
				if from != p.id && drop(from) {
					return p2p.Ignore // lost on the link from that neighbour
				}
				return v.Validate(ctx, from, b)
			})
		}
	}
	pm, err := p2p.NewMetrics(p.reg)
	if err != nil {
		return err
	}
	tick := time.Duration(p.gen.Round.TickMillis) * time.Millisecond
	seen := time.Duration(p.gen.Round.RebroadcastTicks) * tick * 9 / 10
	gopts := []p2p.GossipOption{p2p.WithMetrics(pm)}
	if seen > 0 {
		gopts = append(gopts, p2p.WithSeenTTL(seen))
	}
	if p.gsp, err = p2p.NewGossip(ctx, p.host, p.gen.Network, validators, gopts...); err != nil {
		return err
	}
	var router routing.ContentRouting
	if !p.o.noDiscover {
		var boot []peer.AddrInfo
		for _, s := range p.cfg.P2P.Bootstrap {
			ai, _ := peer.AddrInfoFromString(s)
			boot = append(boot, *ai)
		}
		if p.disc, err = p2p.NewDiscovery(ctx, p.host, p.gen.Network, boot); err != nil {
			return err
		}
		p.closers = append(p.closers, p.disc.Close)
		router = p.disc.DHT
		if p.cfg.P2P.MDNS {
			svc, err := p2p.StartMDNS(p.host, p.gen.Network)
			if err != nil {
				p.log.Warn("mDNS unavailable", "err", err)
			} else {
				p.closers = append(p.closers, svc.Close)
			}
		}
		if err := pm.WatchHost(p.reg, p.host, p.bw); err != nil {
			return err
		}
	}
	p.bsw = p2p.NewBitswap(ctx, p.host, router, p.store.Blockstore())
	p.closers = append(p.closers, p.bsw.Close)
	if err := pm.WatchBitswap(p.reg, p.bsw); err != nil {
		return err
	}
	p2p.ServeRange(p.host, p.gen.Network, p.commitRange)
	p2p.ServeDAG(p.host, p.gen.Network, p.store.Blockstore(), dagLinks)
	return nil
}

// admit says whether an announcement's author may train.
func (p *Peer) admit(author peer.ID) bool { return p.gen.MayTrain(author.String()) }

func (p *Peer) commitRange(from uint64, n int) [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	if from < 1 || from > uint64(len(p.commits)) {
		return nil
	}
	return append([][]byte(nil), p.commits[from-1:min(uint64(len(p.commits)), from-1+uint64(n))]...)
}

func (p *Peer) makeShell(core *node.Core) error {
	tick := time.Duration(p.gen.Round.TickMillis) * time.Millisecond
	signer, err := p2p.NewKeySigner(p.priv)
	if err != nil {
		return err
	}
	codec, _ := shard.ParseCodec(p.gen.Codec.Name)
	s := &node.Shell{Core: core, Store: p.store, WAL: p.wal, Ledger: p.led, Signer: signer, Agg: p.gen.AggConfig(),
		Codec: codec, TopK: p.gen.Codec.TopK, Tick: tick, HeadTicks: p.gen.Round.HeadTicks, Log: p.log,
		Net: &network{name: p.gen.Network, host: p.host, g: p.gsp, bsw: p.bsw, store: p.store, priv: p.priv, fetchTimeout: p.o.fetch, direct: &p.direct}}
	if p.o.wrapStore != nil {
		s.Store = p.o.wrapStore(s.Store)
	}
	if p.o.wrapNet != nil {
		s.Net = p.o.wrapNet(s.Net)
	}
	if core.IsTrainer() {
		if s.Trainer, err = p.makeTrainer(); err != nil {
			return err
		}
	}
	if p.o.test == nil && p.cfg.Data.EvalSamples > 0 && p.o.train == nil {
		if _, p.test, err = loadMNIST(p.cfg.Data.Dir); err != nil {
			return err
		}
	} else {
		p.test = p.o.test
	}
	if p.test != nil && p.cfg.Data.EvalSamples > 0 && p.test.N() > p.cfg.Data.EvalSamples {
		idx := make([]int, p.cfg.Data.EvalSamples)
		for i := range idx {
			idx[i] = i
		}
		p.test = p.test.Subset(idx)
	}
	if d := p.gen.DP; d != nil && core.IsTrainer() {
		b, _ := learner.NewBudget(d.Epsilon, d.Delta)
		s.Privacy = &node.Privacy{DP: learner.DPConfig{Clip: d.Clip, Sigma: d.Sigma}, Budget: b,
			Noise: learner.NewNoiseRand(p.o.noiseSeed), Spent: p.writeReleased, PerExample: d.PerExample()}
		if d.PerExample() {
			c, ok := s.Trainer.(interface{ Cost() (float64, int) })
			if !ok {
				return fmt.Errorf("%w: dp.mode sample: the trainer %T cannot say what a DP-SGD update costs", ErrConfig, s.Trainer)
			}
			s.Privacy.Rate, s.Privacy.Steps = c.Cost()
		}
	}
	s.OnCommit = p.onCommit
	s.OnAggregate = p.o.onAgg
	s.OnStep = p.onStep
	s.OnEvidence = func(consensus.Evidence) {
		p.mu.Lock()
		p.status.Equivocations++
		p.mu.Unlock()
		p.m.evidence.Inc()
	}
	p.shell = s
	return nil
}

func loadMNIST(dir string) (train, test *learner.Dataset, err error) {
	if dir == "" {
		if dir, err = learner.DefaultMNISTDir(); err != nil {
			return nil, nil, fmt.Errorf("%w: data.dir: %w", ErrConfig, err)
		}
	}
	return learner.LoadMNIST(dir)
}

func (p *Peer) makeTrainer() (node.Trainer, error) {
	if p.o.trainer != nil {
		return p.o.trainer, nil
	}
	data := p.o.train
	if data == nil {
		train, test, err := loadMNIST(p.cfg.Data.Dir)
		if err != nil {
			return nil, err
		}
		p.o.test = test
		part, err := learner.ParsePartition(p.cfg.Data.Partition)
		if err != nil {
			return nil, fmt.Errorf("%w: data.partition: %w", ErrConfig, err)
		}
		parts, err := part.Split(train.Labels, p.cfg.Data.Shards, rand.New(rand.NewPCG(p.cfg.Data.Seed, 0)))
		if err != nil {
			return nil, fmt.Errorf("%w: data: %w", ErrConfig, err)
		}
		data = train.Subset(parts[p.cfg.Data.Shard])
	}
	h := fnv.New64a()
	h.Write([]byte(p.id))
	return &Trainer{Arch: p.arch, Data: data, Config: p.gen.TrainConfig(), Seed: p.cfg.Data.Seed ^ h.Sum64()}, nil
}

// Trainer is local training on the peer's data: Steps mini-batches from
// the committed model, seeded by (Seed, height) so that a height's update
// is reproducible.
type Trainer struct {
	Arch   learner.Arch
	Data   *learner.Dataset
	Config learner.TrainConfig
	Seed   uint64
	// Observe, if set, is told each height's training statistics.
	Observe func(height uint64, st learner.TrainStats)
}

// Train implements node.Trainer.
func (t *Trainer) Train(_ context.Context, height uint64, base []float32) ([]float32, int, error) {
	return t.train(height, base, func(m *learner.Model, rng *rand.Rand) (learner.TrainStats, error) {
		return learner.Train(m, t.Data, t.Config, rng)
	})
}

// TrainPrivate implements node.PrivateTrainer: DP-SGD with Poisson
// sampling at rate batch/n, noise from noise.
func (t *Trainer) TrainPrivate(_ context.Context, height uint64, base []float32, dp learner.DPConfig, noise *rand.Rand) ([]float32, int, error) {
	return t.train(height, base, func(m *learner.Model, rng *rand.Rand) (learner.TrainStats, error) {
		return learner.TrainDP(m, t.Data, t.Config, dp, rng, noise)
	})
}

// Cost is what one DP-SGD update spends: steps at sampling rate q.
func (t *Trainer) Cost() (q float64, steps int) { return learner.DPSGDCost(t.Config, t.Data.N()) }

func (t *Trainer) train(height uint64, base []float32, run func(*learner.Model, *rand.Rand) (learner.TrainStats, error)) ([]float32, int, error) {
	m := &learner.Model{Arch: t.Arch, Params: append([]float32(nil), base...)}
	st, err := run(m, rand.New(rand.NewPCG(t.Seed, height)))
	if err != nil {
		return nil, 0, err
	}
	if t.Observe != nil {
		t.Observe(height, st)
	}
	samples := t.Data.N() * max(t.Config.Epochs, 1)
	if t.Config.Steps > 0 {
		samples = min(t.Data.N(), t.Config.Steps*t.Config.BatchSize)
	}
	return learner.Delta(m.Params, base), samples, nil
}

// privacy.json records how many privatised updates this peer released.
type released struct {
	Updates int `json:"updates"`
}

func (p *Peer) readReleased() (int, error) {
	b, err := os.ReadFile(filepath.Join(p.home, "data", "privacy.json"))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var r released
	if err := json.Unmarshal(b, &r); err != nil {
		return 0, fmt.Errorf("daemon: %s: %w", filepath.Join(p.home, "data", "privacy.json"), err)
	}
	return r.Updates, nil
}

// writeReleased records the count durably (write, fsync, rename).
func (p *Peer) writeReleased(n int) error {
	path := filepath.Join(p.home, "data", "privacy.json")
	b, _ := json.Marshal(released{Updates: n})
	f, err := os.Create(path + ".tmp")
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}

// onStep runs on the shell's goroutine after every event.
func (p *Peer) onStep(c *node.Core) {
	p.height.Store(c.Height())
	p.mu.Lock()
	p.status.Round = c.Round()
	if s := p.shell; s.Privacy != nil {
		p.status.EpsilonSpent = s.Privacy.Budget.Spent()
		p.status.PrivacyExhausted = s.PrivacyExhausted()
	}
	p.mu.Unlock()
}

// onCommit runs on the shell's goroutine after a commit is stored.
func (p *Peer) onCommit(c node.Commit) {
	p.height.Store(c.Height + 1)
	now := time.Now()
	p.mu.Lock()
	p.commits = append(p.commits, consensus.Encode(&consensus.Commit{Value: c.BlockBytes, Certificate: c.Certificate}))
	p.blocks = append(p.blocks, c.Block)
	var gap float64
	if p.status.LastCommitUnix > 0 {
		gap = now.Sub(time.Unix(p.status.LastCommitUnix, 0)).Seconds()
	}
	p.status.Height, p.status.HeadCID, p.status.LastCommitUnix = c.Height, c.Block.Result.String(), now.Unix()
	p.status.Updates = len(c.Block.Updates)
	p.mu.Unlock()
	p.m.height.Set(float64(c.Height))
	p.m.commits.Inc()
	p.m.updates.Observe(float64(len(c.Block.Updates)))
	p.m.rounds.Observe(float64(c.Certificate.Round))
	if gap > 0 {
		p.m.interval.Observe(gap)
	}
	p.log.Info("committed", "height", c.Height, "head", c.Block.Result.String(), "updates", len(c.Block.Updates), "round", c.Certificate.Round)
	if _, err := p.store.ApplyRetention(context.Background(), storage.Retention{KeepLast: p.cfg.Storage.KeepLast, KeepEvery: uint64(p.cfg.Storage.KeepEvery)}); err != nil {
		p.log.Warn("retention", "err", err)
	}
	select { // the evaluator takes the newest head; an older pending one is replaced
	case <-p.evalCh:
	default:
	}
	p.evalCh <- c.Block.Result.Cid
	if n := uint64(p.cfg.Storage.GCEvery); n > 0 && c.Height%n == 0 {
		select { // a collection still running takes this one's place
		case p.gcCh <- c.Height:
		default:
		}
	}
	if p.o.onCommit != nil {
		p.o.onCommit(c)
	}
}

// collect runs the store's garbage collections, one at a time, off the
// shell's goroutine (the store's own lock orders it with writers).
func (p *Peer) collect(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case h := <-p.gcCh:
			start := time.Now()
			n, err := p.gc(ctx, h)
			if err != nil {
				if ctx.Err() == nil {
					p.log.Warn("store collection failed; nothing committed is lost, the next one retries", "height", h, "err", err)
				}
				continue
			}
			p.m.collected.Add(float64(n))
			p.log.Info("store collected", "height", h, "blocks_removed", n, "took", time.Since(start).Round(time.Millisecond))
		}
	}
}

// gc collects the store at committed height h: the ledger's blocks stay
// with their lineage manifests, tensors of the last keep_updates heights,
// pinned models and work in flight.
func (p *Peer) gc(ctx context.Context, h uint64) (int, error) {
	p.mu.Lock()
	blocks := slices.Clone(p.blocks)
	p.mu.Unlock()
	c := storage.Collection{Blocks: blocks, InFlightFrom: h}
	if k := uint64(p.cfg.Storage.KeepUpdates); k > 0 && h > k {
		c.TensorsFrom = h - k + 1
	}
	return p.store.GC(ctx, c)
}

// evaluate measures each new head's test accuracy, newest first.
func (p *Peer) evaluate(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case c := <-p.evalCh:
			if p.test == nil {
				continue
			}
			ck, m, err := p.store.GetCheckpoint(ctx, c)
			if err != nil {
				continue
			}
			ev, err := learner.Evaluate(&learner.Model{Arch: p.arch, Params: m.Params}, p.test)
			if err != nil {
				p.log.Warn("evaluating head", "err", err)
				continue
			}
			acc := ev.Accuracy
			p.mu.Lock()
			if ck.Height >= p.status.AccuracyHeight {
				p.status.TestAccuracy, p.status.AccuracyHeight = &acc, ck.Height
			}
			p.mu.Unlock()
			p.m.accuracy.Set(acc)
		}
	}
}

// ID is the peer's libp2p identity.
func (p *Peer) ID() peer.ID { return p.id }

// Host is the peer's libp2p host.
func (p *Peer) Host() host.Host { return p.host }

// Store is the peer's block store.
func (p *Peer) Store() *storage.Store { return p.store }

// Bitswap is the peer's block exchange (its statistics count model bytes).
func (p *Peer) Bitswap() *bitswap.Bitswap { return p.bsw }

// BlockBytesReceived is how many bytes of blocks the peer has fetched:
// over bitswap, and directly from the authors of updates.
func (p *Peer) BlockBytesReceived() int64 {
	n := p.direct.Load()
	if st, err := p.bsw.Stat(); err == nil {
		n += int64(st.DataReceived)
	}
	return n
}

// Registry holds the peer's metrics.
func (p *Peer) Registry() *prometheus.Registry { return p.reg }

// Status is a snapshot of the peer's state.
func (p *Peer) Status() Status {
	p.mu.Lock()
	s := p.status
	p.mu.Unlock()
	s.Peers = peerCount(p.host)
	if p.bw != nil {
		t := p.bw.GetBandwidthTotals()
		s.BytesIn, s.BytesOut = t.TotalIn, t.TotalOut
	}
	for _, a := range p.host.Addrs() {
		s.Addrs = append(s.Addrs, a.String()+"/p2p/"+p.id.String())
	}
	return s
}

// Run runs the peer until ctx ends, then closes everything it opened
// (writes finished, store closed). It returns nil on a clean stop.
func (p *Peer) Run(ctx context.Context) error {
	defer p.close()
	// Deferred in this order so that they run as cancel, wait, close: a
	// shell that stops with an error (its context still live) must stop
	// the helpers too, or waiting for them would never end.
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Add(1)
	go func() { defer wg.Done(); p.evaluate(ctx) }()
	wg.Add(1)
	go func() { defer wg.Done(); p.collect(ctx) }()
	if p.disc != nil {
		wg.Add(1)
		go func() { defer wg.Done(); p.discover(ctx) }()
	}
	if st := p.Status(); st.Height > 0 {
		p.evalCh <- cid.MustParse(st.HeadCID) // measure the restored head
	}
	return p.shell.Run(ctx)
}

// discover advertises the peer under the network's namespace and connects
// to the peers it finds, periodically.
func (p *Peer) discover(ctx context.Context) {
	p.disc.Advertise(ctx)
	wait := time.Second
	for {
		p.disc.Reconnect(ctx)
		if found, err := p.disc.FindPeers(ctx); err == nil {
			for _, ai := range found {
				if ai.ID != p.id && len(ai.Addrs) > 0 && p.host.Network().Connectedness(ai.ID) != libnet.Connected {
					_ = p.host.Connect(ctx, ai)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 15*time.Second)
	}
}

// close releases everything in reverse order of opening.
func (p *Peer) close() {
	for i := len(p.closers) - 1; i >= 0; i-- {
		if err := p.closers[i](); err != nil {
			p.log.Debug("close", "err", err)
		}
	}
	p.closers = nil
}

type peerMetrics struct {
	height, accuracy          prometheus.Gauge
	commits, evidence         prometheus.Counter
	collected                 prometheus.Counter
	updates, rounds, interval prometheus.Histogram
}

func newPeerMetrics(reg prometheus.Registerer) (*peerMetrics, error) {
	m := &peerMetrics{
		height:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "murmur_height", Help: "Last committed height."}),
		accuracy: prometheus.NewGauge(prometheus.GaugeOpts{Name: "murmur_test_accuracy", Help: "Test accuracy of the head model."}),
		commits:  prometheus.NewCounter(prometheus.CounterOpts{Name: "murmur_commits_total", Help: "Heights committed by this peer."}),
		evidence: prometheus.NewCounter(prometheus.CounterOpts{Name: "murmur_equivocations_total", Help: "Equivocations detected."}),
		collected: prometheus.NewCounter(prometheus.CounterOpts{Name: "murmur_store_blocks_collected_total",
			Help: "Blocks the store's garbage collection removed (pruned lineage tensors, stale updates)."}),
		updates: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "murmur_block_updates", Help: "Updates aggregated per committed block.",
			Buckets: prometheus.LinearBuckets(1, 1, 16)}),
		rounds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "murmur_commit_round", Help: "Consensus round at which heights committed.",
			Buckets: prometheus.LinearBuckets(0, 1, 8)}),
		interval: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "murmur_commit_interval_seconds", Help: "Time between commits.",
			Buckets: prometheus.ExponentialBuckets(0.25, 2, 10)}),
	}
	for _, c := range []prometheus.Collector{m.height, m.accuracy, m.commits, m.evidence, m.collected, m.updates, m.rounds, m.interval} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
