package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// The commented template peer init writes is exactly DefaultConfig.
func TestTemplateIsDefault(t *testing.T) {
	var got Config
	md, err := toml.Decode(ConfigTemplate, &got)
	if err != nil {
		t.Fatal(err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		t.Fatalf("template has keys Config does not: %v", und)
	}
	if !reflect.DeepEqual(got, DefaultConfig()) {
		t.Fatalf("template %+v\ndefault  %+v", got, DefaultConfig())
	}
	if err := got.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, "config.toml")
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name, body string
		env        []string
		check      func(Config) bool
		errHas     []string // all must appear in the one-line error
	}{
		{name: "defaults from an empty file", body: "", check: func(c Config) bool { return reflect.DeepEqual(c, DefaultConfig()) }},
		{name: "file value", body: "[api]\nlisten = \"127.0.0.1:9000\"\n", check: func(c Config) bool { return c.API.Listen == "127.0.0.1:9000" }},
		{name: "env beats file", body: "[api]\nlisten = \"127.0.0.1:9000\"\n", env: []string{"MURMUR_API_LISTEN=127.0.0.1:9100"},
			check: func(c Config) bool { return c.API.Listen == "127.0.0.1:9100" }},
		{name: "env list and bool", env: []string{"MURMUR_P2P_BOOTSTRAP=/ip4/127.0.0.1/tcp/1/p2p/12D3KooWBT1sAav23xcp8yTWPTcY4fCFexA9uVtudguz9GK1ZPbj, ", "MURMUR_P2P_MDNS=false", "MURMUR_DATA_SEED=7"},
			check: func(c Config) bool { return len(c.P2P.Bootstrap) == 1 && !c.P2P.MDNS && c.Data.Seed == 7 }},
		{name: "top-level env", env: []string{"MURMUR_GENESIS=/etc/g.json"}, check: func(c Config) bool { return c.Genesis == "/etc/g.json" }},
		{name: "unknown key", body: "[api]\nlisen = \"x\"\n", errHas: []string{"config.toml", "unknown key", "api.lisen"}},
		{name: "syntax", body: "[api\n", errHas: []string{"config.toml", "line 2"}},
		{name: "wrong type", body: "[p2p]\nmax_conns = \"many\"\n", errHas: []string{"config.toml", "max_conns"}},
		{name: "bad multiaddr", body: "[p2p]\nlisten = [\"tcp:4001\"]\n", errHas: []string{"config.toml", "p2p.listen[0]", "not a multiaddr"}},
		{name: "remote api refused", body: "[api]\nlisten = \"0.0.0.0:7400\"\n", errHas: []string{"api.listen", "allow_remote"}},
		{name: "remote api allowed", body: "[api]\nlisten = \"0.0.0.0:7400\"\nallow_remote = true\n", check: func(c Config) bool { return c.API.AllowRemote }},
		{name: "bad env bool", env: []string{"MURMUR_P2P_MDNS=perhaps"}, errHas: []string{"MURMUR_P2P_MDNS", "true or false"}},
		{name: "bad env int", env: []string{"MURMUR_DATA_SHARD=x"}, errHas: []string{"MURMUR_DATA_SHARD", "integer"}},
		{name: "shard out of range", body: "[data]\nshard = 3\nshards = 2\n", errHas: []string{"data.shard", "shard < shards"}},
		{name: "log format", body: "[log]\nformat = \"xml\"\n", errHas: []string{"log.format", "text or json"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := LoadConfig(write(tc.body), tc.env)
			if tc.errHas != nil {
				if err == nil {
					t.Fatalf("no error; got %+v", c)
				}
				if !errors.Is(err, ErrConfig) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("want one line wrapping ErrConfig, got %q", err)
				}
				for _, s := range tc.errHas {
					if !strings.Contains(err.Error(), s) {
						t.Fatalf("error %q lacks %q", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(c) {
				t.Fatalf("unexpected config %+v", c)
			}
		})
	}
	if _, err := LoadConfig(filepath.Join(dir, "missing.toml"), nil); !errors.Is(err, ErrConfig) {
		t.Fatalf("missing file: %v", err)
	}
}

func TestGenesisValidate(t *testing.T) {
	const id = "12D3KooWBT1sAav23xcp8yTWPTcY4fCFexA9uVtudguz9GK1ZPbj"
	for _, tc := range []struct {
		name   string
		tweak  func(*Genesis)
		errHas string
	}{
		{"ok", func(*Genesis) {}, ""},
		{"no validators", func(g *Genesis) { g.Validators = nil }, "validators"},
		{"bad id", func(g *Genesis) { g.Validators[0].ID = "alice" }, "validators[0].id"},
		{"zero power", func(g *Genesis) { g.Validators[0].Power = 0 }, "validators[0].power"},
		{"bad trainer", func(g *Genesis) { g.Trainers = []string{"bob"} }, "trainers[0]"},
		{"network with slash", func(g *Genesis) { g.Network = "a/b" }, "network"},
		{"arch", func(g *Genesis) { g.Model.Arch = "resnet" }, "model.arch"},
		{"rule", func(g *Genesis) { g.Aggregation.Rule = "vote" }, "aggregation"},
		{"codec", func(g *Genesis) { g.Codec.Name = "zip" }, "codec.name"},
		{"topk fraction", func(g *Genesis) { g.Codec = CodecSpec{Name: "topk", TopK: 2} }, "codec.topk"},
		{"dp without noise", func(g *Genesis) { g.DP = &DPSpec{Clip: 1, Epsilon: 1, Delta: 1e-5} }, "dp.sigma"},
		{"dp delta", func(g *Genesis) { g.DP = &DPSpec{Clip: 1, Sigma: 1, Epsilon: 1, Delta: 2} }, "dp"},
		{"tick", func(g *Genesis) { g.Round.TickMillis = 0 }, "round.tick_ms"},
		{"timeouts", func(g *Genesis) { g.Round.TimeoutPrevote = 0 }, "round"},
		{"psk", func(g *Genesis) { g.PSK = "abc" }, "psk"},
		{"steps", func(g *Genesis) { g.Train.Steps = 0 }, "train"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := DefaultGenesis("net", []Validator{{ID: id, Power: 1}})
			tc.tweak(g)
			err := g.Validate()
			if tc.errHas == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrGenesis) || !strings.Contains(err.Error(), tc.errHas) {
				t.Fatalf("want a genesis error naming %q, got %v", tc.errHas, err)
			}
		})
	}
}

// A genesis naming a model CID that its seed does not give is refused:
// peers with different starting models would never agree.
func TestGenesisModelCIDChecked(t *testing.T) {
	g := DefaultGenesis("net", []Validator{{ID: "12D3KooWBT1sAav23xcp8yTWPTcY4fCFexA9uVtudguz9GK1ZPbj", Power: 1}})
	c, err := g.GenesisModel(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	g.Model.CID = c.String()
	if _, err := g.GenesisModel(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	g.Model.Seed++
	if _, err := g.GenesisModel(t.Context(), nil); !errors.Is(err, ErrGenesis) || !strings.Contains(err.Error(), "model.cid") {
		t.Fatalf("a mismatched genesis model: %v", err)
	}
}
