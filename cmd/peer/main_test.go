package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runPeer(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(context.Background(), args, &o, &e)
	return code, o.String(), e.String()
}

func TestBadInputOneLineError(t *testing.T) {
	garbage := t.TempDir()
	for _, n := range []string{"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"} {
		if err := os.WriteFile(filepath.Join(garbage, n), []byte("not mnist"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"sim", "--aggregator", "avg"}, 2, "unknown aggregator"},
		{[]string{"sim", "--attack", "backdoor"}, 2, "unknown attack"},
		{[]string{"sim", "--trim", "0.5"}, 2, "trimmed fraction 0.5"},
		{[]string{"sim", "--aggregator", "median", "--trim", "0.2"}, 2, "--trim applies to"},
		{[]string{"sim", "--byzantine", "8", "--peers", "8"}, 2, "--byzantine 8"},
		{[]string{"sim", "--partition", "dirichlet:-1"}, 2, "dirichlet:A"},
		{[]string{"sim", "--dp-sigma", "1", "--dp-epsilon", "3"}, 2, "not both"},
		{[]string{"sim", "--dp-clip", "2"}, 2, "need --dp-sigma"},
		{[]string{"sim", "--dp-sigma", "1", "--dp-mode", "local"}, 2, "DP mode"},
		{[]string{"sim", "--aggregator", "krum", "--krum-f", "1", "--peers", "4"}, 2, "krum with f=1"},
		{[]string{"sim", "--rounds", "x"}, 2, "invalid value"},
		{[]string{"sim", "--data", garbage}, 1, "not a gzip file"},
		{[]string{"sim", "--data", filepath.Join(garbage, "missing")}, 1, "no such file"},
		{[]string{"train"}, 2, "--centralized"},
		{[]string{"train", "--centralized", "--model", "vit"}, 2, "unknown architecture"},
		{[]string{"privacy", "epsilon", "--sigma", "1"}, 2, "--sample-rate"},
		{[]string{"privacy", "delta"}, 2, "want `peer privacy epsilon"},
		{[]string{"frobnicate"}, 2, "unknown command"},
	}
	for _, tc := range tests {
		code, stdout, stderr := runPeer(tc.args...)
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		last := lines[len(lines)-1]
		if code != tc.code || !strings.Contains(last, tc.want) || stdout != "" && tc.code != 0 && strings.Contains(stdout, "{") {
			t.Errorf("peer %v: exit %d, last stderr line %q; want exit %d and %q", tc.args, code, last, tc.code, tc.want)
		}
		if len(lines) > 2 {
			t.Errorf("peer %v: %d lines on stderr, want one error line:\n%s", tc.args, len(lines), stderr)
		}
	}
}

func TestPrivacyEpsilonJSON(t *testing.T) {
	code, stdout, stderr := runPeer("privacy", "epsilon", "--sigma", "1.5", "--sample-rate", "0.04", "--steps", "2250", "--delta", "1e-5", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var out struct{ Epsilon float64 }
	if err := json.Unmarshal([]byte(stdout), &out); err != nil {
		t.Fatalf("stdout is not one JSON object: %v\n%s", err, stdout)
	}
	if math.Abs(out.Epsilon-7.32911117143) > 1e-6 {
		t.Fatalf("ε %v", out.Epsilon)
	}
}

// TestSimJSONOnRealMNIST runs the smallest real simulation and checks the
// summary fields DESIGN.md §5 promises.
func TestSimJSONOnRealMNIST(t *testing.T) {
	out := t.TempDir()
	code, stdout, stderr := runPeer("sim", "--peers", "3", "--byzantine", "1", "--rounds", "2", "--local-steps", "3", "--aggregator", "median", "--json", "--out", out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var sum map[string]any
	if err := json.Unmarshal([]byte(stdout), &sum); err != nil {
		t.Fatalf("stdout is not one JSON object: %v\n%s", err, stdout)
	}
	for _, k := range []string{"final_accuracy", "rounds_committed", "heads_agree", "head_cid", "bytes_received_per_peer_per_round", "model_bytes", "seconds", "seed"} {
		if _, ok := sum[k]; !ok {
			t.Errorf("summary lacks %q", k)
		}
	}
	if code, out, _ := runPeer("inspect", filepath.Join(out, "head.car"), "--json"); code != 0 || !strings.Contains(out, sum["head_cid"].(string)) {
		t.Errorf("head.car does not hold the head %v: %s", sum["head_cid"], out)
	}
	if sum["rounds_committed"] != 2.0 || sum["heads_agree"] != true || sum["model_bytes"] != 4*199210.0 {
		t.Errorf("summary %v", sum)
	}
	for _, f := range []string{"rounds.csv", "report.json", "head.car"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Error(err)
		}
	}
}

// peer init writes a usable home once and refuses to overwrite it; start
// and status explain what is missing or wrong in one line.
func TestInitStartStatusErrors(t *testing.T) {
	home := filepath.Join(t.TempDir(), "h")
	code, out, errOut := runPeer("init", "--home", home)
	if code != 0 || !strings.Contains(out, "peer id 12D3KooW") {
		t.Fatalf("init: code %d\n%s%s", code, out, errOut)
	}
	for _, f := range []string{"key", "config.toml", "genesis.json", "store", "data"} {
		if _, err := os.Stat(filepath.Join(home, f)); err != nil {
			t.Fatalf("init did not make %s: %v", f, err)
		}
	}
	for _, tc := range []struct {
		args []string
		env  map[string]string
		code int
		want string
	}{
		{args: []string{"init", "--home", home}, code: 1, want: "already initialised"},
		{args: []string{"start", "--home", filepath.Join(home, "nope")}, code: 1, want: "run `peer init"},
		{args: []string{"start", "--home", home, "--log-format", "xml"}, code: 1, want: "log.format"},
		{args: []string{"start", "--home", home}, env: map[string]string{"MURMUR_API_LISTEN": "8.8.8.8:1"}, code: 1, want: "MURMUR_API_LISTEN"},
		{args: []string{"start", "--home", home}, env: map[string]string{"MURMUR_P2P_MDNS": "maybe"}, code: 1, want: "MURMUR_P2P_MDNS"},
		{args: []string{"status", "--api", "127.0.0.1:1"}, code: 1, want: "is it running?"},
	} {
		for k, v := range tc.env {
			t.Setenv(k, v)
		}
		code, _, errOut := runPeer(tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.want) || strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
			t.Errorf("%v %v: code %d, stderr %q; want code %d and one line with %q", tc.args, tc.env, code, errOut, tc.code, tc.want)
		}
		for k := range tc.env {
			os.Unsetenv(k)
		}
	}
	// A corrupt config names the file and the line.
	if err := os.WriteFile(filepath.Join(home, "config.toml"), []byte("[p2p\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := runPeer("start", "--home", home); code != 1 || !strings.Contains(errOut, "config.toml: line") {
		t.Fatalf("corrupt config: code %d, %q", code, errOut)
	}
	// A corrupt genesis names the file.
	if err := os.WriteFile(filepath.Join(home, "config.toml"), []byte(""), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, "genesis.json"), []byte("{\"network\": 7}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := runPeer("start", "--home", home); code != 1 || !strings.Contains(errOut, "genesis.json") {
		t.Fatalf("corrupt genesis: code %d, %q", code, errOut)
	}
}
