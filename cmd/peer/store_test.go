package main

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/murmur-ml/murmur/learner"
	"github.com/murmur-ml/murmur/p2p"
	"github.com/murmur-ml/murmur/shard"
	"github.com/murmur-ml/murmur/storage"
)

// TestInspectExportImport stores a checkpoint and a signed update in a home,
// then inspects, exports and imports them through the CLI.
func TestInspectExportImport(t *testing.T) {
	ctx := context.Background()
	home := t.TempDir()
	m, _ := learner.NewModel(learner.Arch2NN, rand.New(rand.NewPCG(1, 1)))
	ck, err := storeCheckpoint(ctx, home, m, map[string]float64{"test_accuracy": 0.5})
	if err != nil {
		t.Fatal(err)
	}
	s, err := openStore(home, false)
	if err != nil {
		t.Fatal(err)
	}
	priv, _, _ := crypto.GenerateEd25519Key(nil)
	signer, _ := p2p.NewKeySigner(priv)
	layers := make([]storage.Layer, len(m.Arch.Layers))
	for i, l := range m.Arch.Layers {
		layers[i] = storage.Layer{Name: l.Name, Shape: l.Shape}
	}
	delta := make([]float32, len(m.Params))
	delta[5] = 3
	delta[199209] = 4
	up, err := s.PutUpdate(ctx, storage.UpdateInput{Network: "t", Height: 1, Base: ck, Layers: layers, Delta: delta,
		Samples: 10, Codec: shard.TopK, TopK: 0.01}, signer)
	s.Close()
	if err != nil {
		t.Fatal(err)
	}

	code, out, errs := runPeer("inspect", ck.String(), "--home", home, "--json", "--verify")
	if code != 0 {
		t.Fatalf("inspect checkpoint: %s", errs)
	}
	var in inspection
	if err := json.Unmarshal([]byte(out), &in); err != nil {
		t.Fatal(err)
	}
	if in.Kind != "checkpoint" || in.Params != 199210 || len(in.Shards) != 8 || in.Verified == nil || *in.Verified != 8 { // 8 shards + manifest, the two zero biases being one block
		t.Fatalf("checkpoint inspection: %+v", in)
	}
	code, out, errs = runPeer("inspect", up.String(), "--home", home, "--json")
	if code != 0 {
		t.Fatalf("inspect update: %s", errs)
	}
	in = inspection{}
	_ = json.Unmarshal([]byte(out), &in)
	if in.Kind != "update" || in.SignatureValid == nil || !*in.SignatureValid || in.Norm == nil || *in.Norm != 5 || in.Codec != "topk" {
		t.Fatalf("update inspection: %s", out)
	}

	car := filepath.Join(t.TempDir(), "u.car")
	if code, _, errs := runPeer("export", up.String(), "--car", car, "--home", home); code != 0 {
		t.Fatalf("export: %s", errs)
	}
	other := t.TempDir()
	if code, out, errs := runPeer("import", car, "--home", other); code != 0 || !strings.Contains(out, up.String()) {
		t.Fatalf("import: %s %s", out, errs)
	}
	if code, out, _ := runPeer("inspect", car); code != 0 || !strings.Contains(out, "valid=true") {
		t.Fatalf("inspect CAR: %s", out)
	}
	// Bad input: a truncated CAR imports nothing; an unknown CID is an error.
	raw, _ := os.ReadFile(car)
	trunc := filepath.Join(t.TempDir(), "t.car")
	_ = os.WriteFile(trunc, raw[:len(raw)/2], 0o644)
	fresh := t.TempDir()
	if code, _, errs := runPeer("import", trunc, "--home", fresh); code != 1 || !strings.Contains(errs, "nothing was imported") {
		t.Fatalf("truncated import: %d %s", code, errs)
	}
	if code, _, errs := runPeer("inspect", "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy", "--home", home); code != 1 || !strings.Contains(errs, "not found") {
		t.Fatalf("missing CID: %d %s", code, errs)
	}
	if code, _, errs := runPeer("inspect", ck.String(), "--home", filepath.Join(home, "nope")); code != 1 || !strings.Contains(errs, "no store") {
		t.Fatalf("missing home: %d %s", code, errs)
	}
	// An update whose tensors were pruned (storage.keep_updates) is still
	// inspected from its manifest, and says what is missing.
	s, err = openStore(home, false)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := s.GetObject(ctx, up)
	if err == nil {
		err = s.Blockstore().DeleteBlock(ctx, obj.(*storage.Update).Shards[0].Link.Cid)
	}
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	code, out, errs = runPeer("inspect", up.String(), "--home", home, "--json")
	in = inspection{}
	if code != 0 || json.Unmarshal([]byte(out), &in) != nil || in.Missing != 1 || in.Norm != nil || in.Author == "" || !in.Shards[0].Missing {
		t.Fatalf("inspecting a pruned update: %d %s %s", code, out, errs)
	}
	if code, out, _ := runPeer("inspect", up.String(), "--home", home); code != 0 || !strings.Contains(out, "not stored here") {
		t.Fatalf("inspecting a pruned update: %s", out)
	}
}
