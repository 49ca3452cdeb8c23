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
