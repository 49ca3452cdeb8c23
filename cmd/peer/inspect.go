package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"slices"
	"strings"

	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/murmur-ml/murmur/p2p"
	"github.com/murmur-ml/murmur/shard"
	"github.com/murmur-ml/murmur/storage"
)

type shardInfo struct {
	CID    string  `json:"cid"`
	Tensor string  `json:"tensor,omitempty"`
	Offset int     `json:"offset"`
	Len    int     `json:"len"`
	Bytes  int     `json:"bytes"`
	Codec  string  `json:"codec"`
	K      int     `json:"k,omitempty"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	Mean   float64 `json:"mean"`
	L2     float64 `json:"l2"`
	// Missing: not stored here (pruned, or never fetched).
	Missing bool `json:"missing,omitempty"`
}

type inspection struct {
	CID            string             `json:"cid"`
	Kind           string             `json:"kind"`
	Source         string             `json:"source"`
	Height         *uint64            `json:"height,omitempty"`
	Parent         string             `json:"parent,omitempty"`
	Arch           string             `json:"arch,omitempty"`
	Layers         []storage.Layer    `json:"layers,omitempty"`
	Params         int                `json:"params,omitempty"`
	Metrics        map[string]float64 `json:"metrics,omitempty"`
	Network        string             `json:"network,omitempty"`
	Base           string             `json:"base,omitempty"`
	Author         string             `json:"author,omitempty"`
	Samples        int                `json:"samples,omitempty"`
	Codec          string             `json:"codec,omitempty"`
	Clip           float64            `json:"clip,omitempty"`
	Sigma          float64            `json:"sigma,omitempty"`
	Epsilon        float64            `json:"epsilon,omitempty"`
	Norm           *float64           `json:"norm,omitempty"`
	SignatureValid *bool              `json:"signature_valid,omitempty"`
	SignatureError string             `json:"signature_error,omitempty"`
	Result         string             `json:"result,omitempty"`
	Updates        []string           `json:"updates,omitempty"`
	Rule           string             `json:"rule,omitempty"`
	Proposer       string             `json:"proposer,omitempty"`
	TimeMS         int64              `json:"time_ms,omitempty"`
	Block          string             `json:"block,omitempty"`
	Round          *int               `json:"round,omitempty"`
	Signers        []string           `json:"signers,omitempty"`
	Validity       string             `json:"validity,omitempty"`
	Shards         []shardInfo        `json:"shards,omitempty"`
	Shard          *shardInfo         `json:"shard,omitempty"`
	Verified       *int               `json:"blocks_verified,omitempty"`
	Missing        int                `json:"shards_missing,omitempty"`
}

func runInspect(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("inspect", stderr)
	home := homeFlag(fs)
	asJSON := fs.Bool("json", false, "print one JSON object on stdout")
	verify := fs.Bool("verify", false, "re-hash every block reachable from the object")
	target, rest := splitTarget(args)
	if err := parse(fs, rest); err != nil {
		return err
	}
	if target == "" {
		return fmt.Errorf("%w: want `peer inspect CID|FILE.car`", errUsage)
	}
	var (
		s      *storage.Store
		root   cid.Cid
		source string
		err    error
	)
	if c, perr := cid.Decode(target); perr == nil {
		if s, err = openStoreOrPeer(ctx, *home); err != nil {
			return err
		}
		root, source = c, "store "+*home
	} else {
		if s, root, err = storeFromCAR(ctx, target); err != nil {
			return err
		}
		source = "car " + target
	}
	defer s.Close()
	in, err := inspect(ctx, s, root)
	if err != nil {
		return err
	}
	in.Source = source
	if *verify {
		n, err := verifyReachable(ctx, s, root)
		if err != nil {
			return err
		}
		in.Verified = &n
	}
	if *asJSON {
		return writeJSON(stdout, in)
	}
	printInspection(stdout, in)
	return nil
}

// splitTarget takes the first positional argument out of args, wherever it
// stands among the flags.
func splitTarget(args []string) (string, []string) {
	for i, a := range args {
		if !strings.HasPrefix(a, "-") && (i == 0 || !flagTakesValue(args[i-1])) {
			return a, append(append([]string{}, args[:i]...), args[i+1:]...)
		}
	}
	return "", args
}

func flagTakesValue(f string) bool {
	if strings.Contains(f, "=") {
		return false
	}
	switch strings.TrimLeft(f, "-") {
	case "home", "car", "data":
		return true
	}
	return false
}

// storeFromCAR reads a CAR file (every block re-hashed) into a throwaway
// in-memory store.
func storeFromCAR(ctx context.Context, path string) (*storage.Store, cid.Cid, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, cid.Undef, fmt.Errorf("%q is neither a CID nor a readable CAR file: %w", path, err)
	}
	defer f.Close()
	s := storage.NewStore(dssync.MutexWrap(ds.NewMapDatastore()), nil)
	roots, _, err := s.ImportCAR(ctx, f)
	if err != nil {
		return nil, cid.Undef, fmt.Errorf("%s: %w", path, err)
	}
	if len(roots) != 1 {
		return nil, cid.Undef, fmt.Errorf("%s: %d roots, want 1", path, len(roots))
	}
	return s, roots[0], nil
}

func inspect(ctx context.Context, s *storage.Store, c cid.Cid) (*inspection, error) {
	in := &inspection{CID: c.String()}
	if c.Type() == cid.Raw {
		b, err := s.Get(ctx, c)
		if err != nil {
			return nil, err
		}
		si, err := shardStats(c, b)
		if err != nil {
			return nil, err
		}
		in.Kind, in.Shard = "shard", &si
		return in, nil
	}
	obj, err := s.GetObject(ctx, c)
	if err != nil {
		return nil, err
	}
	shards := func(refs []storage.ShardRef, layers []storage.Layer) ([]shardInfo, []float32, error) {
		var out []shardInfo
		var all []float32
		for _, r := range refs {
			b, err := s.Get(ctx, r.Link.Cid)
			if errors.Is(err, storage.ErrNotFound) {
				// Pruned (storage.keep_updates) or never fetched: the
				// manifest still says what it was.
				si := shardInfo{CID: r.Link.String(), Offset: r.Offset, Missing: true}
				if r.Tensor >= 0 && r.Tensor < len(layers) {
					si.Tensor = layers[r.Tensor].Name
				}
				out = append(out, si)
				in.Missing++
				continue
			}
			if err != nil {
				return nil, nil, err
			}
			si, err := shardStats(r.Link.Cid, b)
			if err != nil {
				return nil, nil, err
			}
			if r.Tensor >= 0 && r.Tensor < len(layers) {
				si.Tensor = layers[r.Tensor].Name
			}
			si.Offset = r.Offset
			out = append(out, si)
			v, _, _ := shard.Decode(b)
			all = append(all, v...)
		}
		return out, all, nil
	}
	switch o := obj.(type) {
	case *storage.Checkpoint:
		in.Kind, in.Height, in.Arch, in.Layers, in.Metrics = storage.KindCheckpoint, &o.Height, o.Arch, o.Layers, o.Metrics
		if o.Parent != nil {
			in.Parent = o.Parent.String()
		}
		for _, l := range o.Layers {
			in.Params += l.Size()
		}
		if in.Shards, _, err = shards(o.Shards, o.Layers); err != nil {
			return nil, err
		}
	case *storage.Update:
		in.Kind, in.Height, in.Network, in.Base, in.Author = storage.KindUpdate, &o.Height, o.Network, o.Base.String(), o.Author
		in.Samples, in.Codec, in.Clip, in.Sigma, in.Epsilon = o.Samples, o.Codec, o.Clip, o.Sigma, o.Epsilon
		var layers []storage.Layer
		if base, err := s.GetObject(ctx, o.Base.Cid); err == nil {
			if ck, ok := base.(*storage.Checkpoint); ok {
				layers = ck.Layers
			}
		}
		var all []float32
		if in.Shards, all, err = shards(o.Shards, layers); err != nil {
			return nil, err
		}
		if in.Missing == 0 {
			norm := l2(all)
			in.Norm = &norm
		}
		ok, verr := verifyUpdate(o)
		in.SignatureValid = &ok
		if verr != nil {
			in.SignatureError = verr.Error()
		}
	case *storage.Block:
		in.Kind, in.Height, in.Network, in.Base, in.Result = storage.KindBlock, &o.Height, o.Network, o.Base.String(), o.Result.String()
		in.Rule, in.Proposer, in.TimeMS = o.Rule, o.Proposer, o.TimeMS
		if o.Parent != nil {
			in.Parent = o.Parent.String()
		}
		for _, u := range o.Updates {
			in.Updates = append(in.Updates, u.String())
		}
	case *storage.Certificate:
		in.Kind, in.Height, in.Block, in.Round = storage.KindCertificate, &o.Height, o.Block.String(), &o.Round
		for _, v := range o.Votes {
			in.Signers = append(in.Signers, v.Validator)
		}
		// Checking the quorum needs the genesis validator set and the vote
		// format of the consensus package (issue 3/6).
		in.Validity = "not checked: needs the network's validator set"
	}
	return in, nil
}

// verifyUpdate checks the update's signature against the ed25519 key inside
// its author's peer ID.
func verifyUpdate(u *storage.Update) (bool, error) {
	if _, err := peer.Decode(u.Author); err != nil {
		return false, fmt.Errorf("author %q is not a peer ID: %w", u.Author, err)
	}
	msg, err := storage.SigningBytes(u)
	if err != nil {
		return false, err
	}
	if !(p2p.PeerVerifier{}).Verify(u.Author, msg, u.Signature) {
		return false, errors.New("signature does not verify")
	}
	return true, nil
}

func shardStats(c cid.Cid, b []byte) (shardInfo, error) {
	v, h, err := shard.Decode(b)
	if err != nil {
		return shardInfo{}, fmt.Errorf("shard %s: %w", c, err)
	}
	si := shardInfo{CID: c.String(), Len: h.Len, Bytes: len(b), Codec: h.Codec.String(), K: h.K,
		Min: math.Inf(1), Max: math.Inf(-1)}
	var sum float64
	for _, x := range v {
		f := float64(x)
		si.Min, si.Max = min(si.Min, f), max(si.Max, f)
		sum += f
	}
	si.Mean, si.L2 = sum/float64(len(v)), l2(v)
	return si, nil
}

func l2(v []float32) float64 {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	return math.Sqrt(s)
}

// verifyReachable re-hashes every block reachable from root (the export
// walk, written to nowhere) and returns how many there were.
func verifyReachable(ctx context.Context, s *storage.Store, root cid.Cid) (int, error) {
	return s.ExportCAR(ctx, root, io.Discard)
}

func printInspection(w io.Writer, in *inspection) {
	fmt.Fprintf(w, "%s %s (from %s)\n", in.Kind, in.CID, in.Source)
	if in.Height != nil {
		fmt.Fprintf(w, "  height     %d\n", *in.Height)
	}
	kv := func(k, v string) {
		if v != "" {
			fmt.Fprintf(w, "  %-10s %s\n", k, v)
		}
	}
	kv("parent", in.Parent)
	kv("network", in.Network)
	kv("arch", in.Arch)
	if in.Params > 0 {
		fmt.Fprintf(w, "  params     %d (float32)\n", in.Params)
	}
	for _, l := range in.Layers {
		fmt.Fprintf(w, "    %-14s %v\n", l.Name, l.Shape)
	}
	for _, k := range slices.Sorted(maps.Keys(in.Metrics)) {
		fmt.Fprintf(w, "  metric     %s = %g\n", k, in.Metrics[k])
	}
	kv("base", in.Base)
	kv("author", in.Author)
	if in.Kind == storage.KindUpdate {
		fmt.Fprintf(w, "  samples    %d\n  codec      %s\n  clip       %g  sigma %g  epsilon %g\n", in.Samples, in.Codec, in.Clip, in.Sigma, in.Epsilon)
		if in.Norm != nil {
			fmt.Fprintf(w, "  norm       %.6g\n", *in.Norm)
		}
		fmt.Fprintf(w, "  signature  valid=%v %s\n", *in.SignatureValid, in.SignatureError)
	}
	kv("result", in.Result)
	kv("rule", in.Rule)
	kv("proposer", in.Proposer)
	for _, u := range in.Updates {
		kv("update", u)
	}
	kv("block", in.Block)
	for _, s := range in.Signers {
		kv("signer", s)
	}
	kv("validity", in.Validity)
	shards := in.Shards
	if in.Shard != nil {
		shards = []shardInfo{*in.Shard}
	}
	if in.Missing > 0 {
		fmt.Fprintf(w, "  tensors    %d of %d shards not stored here (pruned by storage.keep_updates, or never fetched)\n", in.Missing, len(in.Shards))
	}
	if len(shards) > 0 {
		fmt.Fprintf(w, "  %-60s %-12s %8s %7s %6s %10s %10s %10s %10s\n", "shard", "tensor", "offset", "len", "codec", "min", "max", "mean", "l2")
		for _, s := range shards {
			if s.Missing {
				fmt.Fprintf(w, "  %-60s %-12s %8d %7s\n", s.CID, s.Tensor, s.Offset, "(not stored)")
				continue
			}
			fmt.Fprintf(w, "  %-60s %-12s %8d %7d %6s %10.4g %10.4g %10.4g %10.4g\n", s.CID, s.Tensor, s.Offset, s.Len, s.Codec, s.Min, s.Max, s.Mean, s.L2)
		}
	}
	if in.Verified != nil {
		fmt.Fprintf(w, "  verified   %d blocks re-hashed, all match their CIDs\n", *in.Verified)
	}
}

func runExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("export", stderr)
	home := homeFlag(fs)
	car := fs.String("car", "", "CAR v1 file to write")
	target, rest := splitTarget(args)
	if err := parse(fs, rest); err != nil {
		return err
	}
	c, err := cid.Decode(target)
	if err != nil || *car == "" {
		return fmt.Errorf("%w: want `peer export CID --car FILE`", errUsage)
	}
	s, err := openStoreOrPeer(ctx, *home)
	if err != nil {
		return err
	}
	defer s.Close()
	tmp := *car + ".partial"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	n, err := s.ExportCAR(ctx, c, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, *car); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "exported %s and %d linked blocks to %s\n", c, n-1, *car)
	return nil
}

func runImport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("import", stderr)
	home := homeFlag(fs)
	target, rest := splitTarget(args)
	if err := parse(fs, rest); err != nil {
		return err
	}
	if target == "" {
		return fmt.Errorf("%w: want `peer import FILE.car`", errUsage)
	}
	f, err := os.Open(target)
	if err != nil {
		return err
	}
	defer f.Close()
	s, err := openStore(*home, true)
	if err != nil {
		// A running peer holds the store: hand the file to it.
		car, rerr := io.ReadAll(f)
		if rerr != nil {
			return rerr
		}
		out, perr := importThroughPeer(ctx, *home, car)
		if perr != nil {
			return fmt.Errorf("%w; through the running peer: %w", err, perr)
		}
		fmt.Fprintf(stdout, "imported through the running peer: %s", out)
		return nil
	}
	defer s.Close()
	roots, n, err := s.ImportCAR(ctx, f)
	if err != nil {
		return fmt.Errorf("%s: %w (nothing was imported)", target, err)
	}
	for _, r := range roots {
		if err := s.Keep(ctx, r); err != nil {
			return fmt.Errorf("%s: keeping %s: %w", target, r, err)
		}
		fmt.Fprintf(stdout, "imported %s (%d blocks verified and stored)\n", r, n)
	}
	return nil
}
