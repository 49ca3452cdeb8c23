package daemon

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/murmur-ml/murmur/learner"
)

// Config is one peer's own setting (config.toml in its home); what the
// whole network must share is in the Genesis. Relative paths are relative
// to the home folder.
type Config struct {
	Genesis string     `toml:"genesis"`
	Key     string     `toml:"key"`
	P2P     P2PConfig  `toml:"p2p"`
	API     APIConfig  `toml:"api"`
	Log     LogConfig  `toml:"log"`
	Data    DataConfig `toml:"data"`
	Train   TrainOpts  `toml:"train"`
	Storage StoreOpts  `toml:"storage"`
}

// P2PConfig is the peer's networking.
type P2PConfig struct {
	Listen    []string `toml:"listen"`
	Bootstrap []string `toml:"bootstrap"`
	MDNS      bool     `toml:"mdns"`
	NAT       bool     `toml:"nat"`
	MaxConns  int      `toml:"max_conns"`
}

// APIConfig is the local HTTP API (status, metrics, blocks).
type APIConfig struct {
	Listen      string `toml:"listen"`
	AllowRemote bool   `toml:"allow_remote"`
}

// LogConfig is how the peer logs (on stderr).
type LogConfig struct {
	Format string `toml:"format"`
	Level  string `toml:"level"`
}

// DataConfig is the peer's local training data: its share of MNIST.
type DataConfig struct {
	Dir         string `toml:"dir"`
	Partition   string `toml:"partition"`
	Shard       int    `toml:"shard"`
	Shards      int    `toml:"shards"`
	Seed        uint64 `toml:"seed"`
	EvalSamples int    `toml:"eval_samples"`
}

// TrainOpts says whether this peer contributes updates (when the genesis
// allows it to).
type TrainOpts struct {
	Enabled bool `toml:"enabled"`
}

// StoreOpts is the local block store's retention.
type StoreOpts struct {
	KeepLast  int  `toml:"keep_last"`
	KeepEvery int  `toml:"keep_every"`
	Sync      bool `toml:"sync"`
	// KeepUpdates is how many recent heights keep their updates' tensors
	// (0: all); older lineage keeps its manifests only. GCEvery is how many
	// heights pass between collections (0: never).
	KeepUpdates int `toml:"keep_updates"`
	GCEvery     int `toml:"gc_every"`
}

// DefaultConfig is what peer init writes.
func DefaultConfig() Config {
	return Config{
		Genesis: "genesis.json", Key: "key",
		P2P:     P2PConfig{Listen: []string{"/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"}, Bootstrap: []string{}, MDNS: true, MaxConns: 256},
		API:     APIConfig{Listen: "127.0.0.1:7400"},
		Log:     LogConfig{Format: "text", Level: "info"},
		Data:    DataConfig{Partition: "iid", Shard: 0, Shards: 1, Seed: 1, EvalSamples: 10000},
		Train:   TrainOpts{Enabled: true},
		Storage: StoreOpts{KeepLast: 20, KeepEvery: 10, Sync: true, KeepUpdates: 20, GCEvery: 10},
	}
}

// ConfigTemplate is config.toml with every default, commented. Keep it in
// step with DefaultConfig (a test parses one into the other).
const ConfigTemplate = `# murmur peer configuration.
# Every key is shown with its default. Environment variables override a key
# as MURMUR_<SECTION>_<KEY> (MURMUR_API_LISTEN, MURMUR_P2P_BOOTSTRAP with
# commas between list items, MURMUR_GENESIS for top-level keys); peer start's
# flags override both. Relative paths are relative to this file's folder.

# The network's genesis file, shared by all its peers.
genesis = "genesis.json"
# This peer's ed25519 key (its identity); created by peer init.
key = "key"

[p2p]
# Multiaddrs to listen on (TCP and QUIC).
listen = ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"]
# Peers to join through, as multiaddrs ending in /p2p/<peer ID>.
bootstrap = []
# Find peers on the local network by multicast DNS.
mdns = true
# AutoNAT, hole punching, relays and port mapping (for peers behind NAT).
nat = false
# Connection limit.
max_conns = 256

[api]
# The HTTP API (/status, /metrics, /block/<cid>, /import).
listen = "127.0.0.1:7400"
# Allow a non-loopback listen address (the API has no authentication).
allow_remote = false

[log]
# text or json, on stderr.
format = "text"
# debug, info, warn or error.
level = "info"

[data]
# MNIST IDX folder; empty: the GoMNIST module in the Go module cache.
dir = ""
# How the training set is split among the network's trainers:
# iid, dirichlet:A or shards:K; this peer takes part "shard" of "shards".
partition = "iid"
shard = 0
shards = 1
seed = 1
# Test samples used to report the head model's accuracy (0: none).
eval_samples = 10000

[train]
# Contribute updates when the genesis allows this peer to train.
enabled = true

[storage]
# Committed models kept: the last keep_last, and every keep_every-th height.
keep_last = 20
keep_every = 10
# fsync every write.
sync = true
# Updates' tensors kept for the last keep_updates heights (0: all); older
# ledger entries keep the manifests of their updates and models (who
# contributed what, by CID, with its ε) but not the tensors, unless a kept
# model above is among them.
keep_updates = 20
# Heights between garbage collections of the store (0: never).
gc_every = 10
`

// LoadConfig reads path, applies MURMUR_* environment overrides from env
// (os.Environ() form), and validates. Errors name the file or variable,
// the key and what is allowed.
func LoadConfig(path string, env []string) (Config, error) {
	cfg := DefaultConfig()
	if err := DecodeTOMLFile(path, &cfg); err != nil {
		return cfg, fmt.Errorf("%w: %w (peer init writes every key, commented)", ErrConfig, err)
	}
	applied, err := applyEnv(&cfg, env)
	if err != nil {
		return cfg, err
	}
	if err := cfg.Validate(); err != nil {
		if len(applied) > 0 {
			return cfg, fmt.Errorf("%s with %s from the environment: %w", path, strings.Join(applied, ", "), err)
		}
		return cfg, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// DecodeTOMLFile decodes the TOML file at path into v and refuses keys v
// does not have; its errors name the file and, for syntax, the line.
func DecodeTOMLFile(path string, v any) error {
	md, err := toml.DecodeFile(path, v)
	if err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			return fmt.Errorf("%s: line %d: %s", path, perr.Position.Line, perr.Message)
		}
		return fmt.Errorf("%s: %v", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return fmt.Errorf("%s: unknown key %q", path, und[0].String())
	}
	return nil
}

// applyEnv sets every field named by a MURMUR_<SECTION>_<KEY> variable and
// returns the names of those it applied.
func applyEnv(cfg *Config, env []string) ([]string, error) {
	var applied []string
	vars := map[string]string{}
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "MURMUR_") {
			vars[k] = v
		}
	}
	var walk func(v reflect.Value, prefix string) error
	walk = func(v reflect.Value, prefix string) error {
		t := v.Type()
		for i := range t.NumField() {
			name := "MURMUR_" + strings.ToUpper(prefix+t.Field(i).Tag.Get("toml"))
			f := v.Field(i)
			if f.Kind() == reflect.Struct {
				if err := walk(f, prefix+t.Field(i).Tag.Get("toml")+"_"); err != nil {
					return err
				}
				continue
			}
			s, ok := vars[name]
			if !ok {
				continue
			}
			if err := setField(f, s); err != nil {
				return fmt.Errorf("%w: %s=%q: %v", ErrConfig, name, s, err)
			}
			applied = append(applied, name)
		}
		return nil
	}
	err := walk(reflect.ValueOf(cfg).Elem(), "")
	return applied, err
}

func setField(f reflect.Value, s string) error {
	switch f.Kind() {
	case reflect.String:
		f.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return errors.New("want true or false")
		}
		f.SetBool(b)
	case reflect.Int:
		n, err := strconv.Atoi(s)
		if err != nil {
			return errors.New("want an integer")
		}
		f.SetInt(int64(n))
	case reflect.Uint64:
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return errors.New("want a non-negative integer")
		}
		f.SetUint(n)
	case reflect.Slice:
		var items []string
		for it := range strings.SplitSeq(s, ",") {
			if it = strings.TrimSpace(it); it != "" {
				items = append(items, it)
			}
		}
		f.Set(reflect.ValueOf(items))
	default:
		panic("daemon: config field of unsupported kind " + f.Kind().String())
	}
	return nil
}

func cerr(key, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrConfig, key, fmt.Sprintf(format, args...))
}

// Validate reports the first unusable key.
func (c Config) Validate() error {
	if c.Genesis == "" {
		return cerr("genesis", "empty: want the path of the network's genesis file")
	}
	if c.Key == "" {
		return cerr("key", "empty: want the path of the peer's key file")
	}
	if len(c.P2P.Listen) == 0 {
		return cerr("p2p.listen", "empty: want at least one multiaddr such as /ip4/0.0.0.0/tcp/4001")
	}
	for i, a := range c.P2P.Listen {
		if _, err := ma.NewMultiaddr(a); err != nil {
			return cerr(fmt.Sprintf("p2p.listen[%d]", i), "%q is not a multiaddr (e.g. /ip4/0.0.0.0/tcp/4001)", a)
		}
	}
	for i, a := range c.P2P.Bootstrap {
		if _, err := peer.AddrInfoFromString(a); err != nil {
			return cerr(fmt.Sprintf("p2p.bootstrap[%d]", i), "%q: want a multiaddr ending in /p2p/<peer ID>", a)
		}
	}
	if c.P2P.MaxConns < 8 {
		return cerr("p2p.max_conns", "%d: want ≥ 8", c.P2P.MaxConns)
	}
	if c.API.Listen != "" {
		host, _, err := net.SplitHostPort(c.API.Listen)
		if err != nil {
			return cerr("api.listen", "%q: want host:port, e.g. 127.0.0.1:7400 (empty: no API)", c.API.Listen)
		}
		ip := net.ParseIP(host)
		if !c.API.AllowRemote && (ip == nil || !ip.IsLoopback()) && host != "localhost" {
			return cerr("api.listen", "%q is not a loopback address; set api.allow_remote = true to expose the unauthenticated API", c.API.Listen)
		}
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return cerr("log.format", "%q: want text or json", c.Log.Format)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return cerr("log.level", "%q: want debug, info, warn or error", c.Log.Level)
	}
	if c.Data.Shards < 1 || c.Data.Shard < 0 || c.Data.Shard >= c.Data.Shards {
		return cerr("data.shard", "%d of %d: want 0 ≤ shard < shards", c.Data.Shard, c.Data.Shards)
	}
	if _, err := learner.ParsePartition(c.Data.Partition); err != nil {
		return cerr("data.partition", "%q: want iid, dirichlet:A or shards:K", c.Data.Partition)
	}
	if c.Data.EvalSamples < 0 {
		return cerr("data.eval_samples", "%d: want ≥ 0", c.Data.EvalSamples)
	}
	if c.Storage.KeepUpdates < 0 || c.Storage.GCEvery < 0 {
		return cerr("storage.keep_updates", "%d (gc_every %d): want both ≥ 0", c.Storage.KeepUpdates, c.Storage.GCEvery)
	}
	if c.Storage.KeepLast < 1 || c.Storage.KeepEvery < 0 {
		return cerr("storage.keep_last", "%d (keep_every %d): want keep_last ≥ 1, keep_every ≥ 0", c.Storage.KeepLast, c.Storage.KeepEvery)
	}
	return nil
}

// Path resolves a path from the config against the home folder.
func Path(home, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(home, p)
}

// writeNew writes a file that must not exist yet.
func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
