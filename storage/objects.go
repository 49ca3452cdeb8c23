package storage

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/fxamacker/cbor/v2"
	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
)

// Errors of object decoding and lookup.
var (
	// ErrMalformed reports bytes that are not a valid murmur object.
	ErrMalformed = errors.New("storage: malformed object")
	// ErrUnknownKind reports a well-formed node whose kind is not ours.
	ErrUnknownKind = errors.New("storage: unknown object kind")
	// ErrNotFound reports a CID that is not in the store.
	ErrNotFound = errors.New("storage: not found")
	// ErrCorruptBlock reports a stored block whose bytes no longer hash to
	// its CID; the block has been quarantined.
	ErrCorruptBlock = errors.New("storage: corrupt block")
)

// Object kinds: the "kind" field of every manifest.
const (
	KindCheckpoint  = "checkpoint"
	KindUpdate      = "update"
	KindBlock       = "block"
	KindCertificate = "certificate"
)

// FormatVersion is written into every manifest.
const FormatVersion = 1

// Limits on decoded manifests, applied before allocation.
const (
	maxManifestBytes = 1 << 20
	maxArray         = 1 << 16
	maxMap           = 64
	maxNesting       = 8
)

// DAG-CBOR as the IPLD spec fixes it: map keys sorted length-first, floats
// always 64-bit, no indefinite lengths, CIDs as tag 42.
var (
	encMode cbor.EncMode
	decMode cbor.DecMode
	kindDec cbor.DecMode // reads only the kind, so unknown fields are expected
)

func init() {
	var err error
	encMode, err = cbor.EncOptions{
		Sort:          cbor.SortLengthFirst,
		ShortestFloat: cbor.ShortestFloatNone,
		NaNConvert:    cbor.NaNConvertReject,
		InfConvert:    cbor.InfConvertReject,
		IndefLength:   cbor.IndefLengthForbidden,
		TagsMd:        cbor.TagsAllowed,
	}.EncMode()
	if err != nil {
		panic(err) // static options: a broken build, not bad input
	}
	decMode, err = cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		MaxArrayElements:  maxArray,
		MaxMapPairs:       maxMap,
		MaxNestedLevels:   maxNesting,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		TagsMd:            cbor.TagsAllowed,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	kindDec, err = cbor.DecOptions{MaxArrayElements: maxArray, MaxMapPairs: maxMap, MaxNestedLevels: maxNesting,
		IndefLength: cbor.IndefLengthForbidden, TagsMd: cbor.TagsAllowed}.DecMode()
	if err != nil {
		panic(err)
	}
}

// Link is a CID inside a manifest, encoded as DAG-CBOR tag 42.
type Link struct{ cid.Cid }

// MarshalCBOR writes tag 42 around the CID's bytes with the 0x00 multibase
// prefix the DAG-CBOR spec requires.
func (l Link) MarshalCBOR() ([]byte, error) {
	if !l.Defined() {
		return nil, fmt.Errorf("%w: undefined link", ErrMalformed)
	}
	return encMode.Marshal(cbor.Tag{Number: 42, Content: append([]byte{0}, l.Bytes()...)})
}

// UnmarshalCBOR reads a tag-42 link.
func (l *Link) UnmarshalCBOR(b []byte) error {
	var t cbor.RawTag
	if err := decMode.Unmarshal(b, &t); err != nil {
		return err
	}
	if t.Number != 42 {
		return fmt.Errorf("%w: tag %d where a link (42) belongs", ErrMalformed, t.Number)
	}
	var raw []byte
	if err := decMode.Unmarshal(t.Content, &raw); err != nil {
		return err
	}
	if len(raw) < 2 || raw[0] != 0 {
		return fmt.Errorf("%w: link without the 0x00 prefix", ErrMalformed)
	}
	c, err := cid.Cast(raw[1:])
	if err != nil {
		return fmt.Errorf("%w: link: %w", ErrMalformed, err)
	}
	l.Cid = c
	return nil
}

// Layer is one tensor of an architecture.
type Layer struct {
	Name  string `cbor:"name" json:"name"`
	Shape []int  `cbor:"shape" json:"shape"`
}

// Size is the tensor's element count.
func (l Layer) Size() int {
	n := 1
	for _, d := range l.Shape {
		n *= d
	}
	return n
}

// ShardRef places one shard block in a tensor.
type ShardRef struct {
	Tensor int  `cbor:"tensor"`
	Offset int  `cbor:"offset"`
	Len    int  `cbor:"len"`
	Link   Link `cbor:"link"`
}

// Checkpoint is a model: architecture, lineage, shards and metrics.
type Checkpoint struct {
	Kind    string             `cbor:"kind"`
	Version int                `cbor:"version"`
	Arch    string             `cbor:"arch"`
	Layers  []Layer            `cbor:"layers"`
	DType   string             `cbor:"dtype"`
	Height  uint64             `cbor:"height"`
	Parent  *Link              `cbor:"parent,omitempty"`
	Shards  []ShardRef         `cbor:"shards"`
	Metrics map[string]float64 `cbor:"metrics,omitempty"`
}

// Update is one trainer's signed contribution to a round.
type Update struct {
	Kind      string     `cbor:"kind"`
	Version   int        `cbor:"version"`
	Network   string     `cbor:"network"`
	Height    uint64     `cbor:"height"`
	Base      Link       `cbor:"base"`
	Author    string     `cbor:"author"` // libp2p peer ID
	Samples   int        `cbor:"samples"`
	Codec     string     `cbor:"codec"`
	Clip      float64    `cbor:"clip"`
	Sigma     float64    `cbor:"sigma"`
	Epsilon   float64    `cbor:"epsilon"` // the author's ε spent so far
	Shards    []ShardRef `cbor:"shards"`
	Signature []byte     `cbor:"signature,omitempty"`
}

// Block is a proposed (and, with a certificate, committed) round.
type Block struct {
	Kind     string `cbor:"kind"`
	Version  int    `cbor:"version"`
	Network  string `cbor:"network"`
	Height   uint64 `cbor:"height"`
	Parent   *Link  `cbor:"parent,omitempty"`
	Base     Link   `cbor:"base"`
	Result   Link   `cbor:"result"`
	Updates  []Link `cbor:"updates"`
	Rule     string `cbor:"rule"`
	Proposer string `cbor:"proposer"`
	TimeMS   int64  `cbor:"time_ms"`
}

// Vote is one validator's precommit signature in a certificate.
type Vote struct {
	Validator string `cbor:"validator"`
	Signature []byte `cbor:"signature"`
}

// Certificate is the 2f+1 precommits that commit a block.
type Certificate struct {
	Kind    string `cbor:"kind"`
	Version int    `cbor:"version"`
	Block   Link   `cbor:"block"`
	Height  uint64 `cbor:"height"`
	Round   int    `cbor:"round"`
	Votes   []Vote `cbor:"votes"`
}

// Encode returns the canonical DAG-CBOR bytes of an object and its CID
// (CIDv1, dag-cbor, sha2-256).
func Encode(obj any) ([]byte, cid.Cid, error) {
	if err := check(obj); err != nil {
		return nil, cid.Undef, err
	}
	b, err := encMode.Marshal(obj)
	if err != nil {
		return nil, cid.Undef, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	c, err := cidOf(cid.DagCBOR, b)
	return b, c, err
}

func cidOf(codec uint64, b []byte) (cid.Cid, error) {
	h, err := mh.Sum(b, mh.SHA2_256, -1)
	if err != nil {
		return cid.Undef, err
	}
	return cid.NewCidV1(codec, h), nil
}

// check enforces what the encoder cannot: kinds, versions and finite floats.
func check(obj any) error {
	switch o := obj.(type) {
	case *Checkpoint:
		for k, v := range o.Metrics {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return fmt.Errorf("%w: metric %q is %v", ErrMalformed, k, v)
			}
		}
		return kindVersion(o.Kind, KindCheckpoint, o.Version)
	case *Update:
		return kindVersion(o.Kind, KindUpdate, o.Version)
	case *Block:
		if !slices.IsSortedFunc(o.Updates, func(a, b Link) int { return bytes.Compare(a.Bytes(), b.Bytes()) }) {
			return fmt.Errorf("%w: block updates are not sorted by CID", ErrMalformed)
		}
		return kindVersion(o.Kind, KindBlock, o.Version)
	case *Certificate:
		return kindVersion(o.Kind, KindCertificate, o.Version)
	}
	return fmt.Errorf("%w: %T", ErrUnknownKind, obj)
}

func kindVersion(got, want string, version int) error {
	if got != want {
		return fmt.Errorf("%w: kind %q in a %s", ErrMalformed, got, want)
	}
	if version != FormatVersion {
		return fmt.Errorf("%w: %s format version %d, want %d", ErrMalformed, want, version, FormatVersion)
	}
	return nil
}

// Decode parses a manifest into its typed object (*Checkpoint, *Update,
// *Block or *Certificate). It refuses anything that is not canonical
// DAG-CBOR of a known kind: a node that re-encodes differently would have a
// second CID for the same content.
func Decode(b []byte) (any, error) {
	if len(b) > maxManifestBytes {
		return nil, fmt.Errorf("%w: %d bytes exceeds %d", ErrMalformed, len(b), maxManifestBytes)
	}
	var head struct {
		Kind string `cbor:"kind"`
	}
	if err := kindDec.Unmarshal(b, &head); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	var obj any
	switch head.Kind {
	case KindCheckpoint:
		obj = &Checkpoint{}
	case KindUpdate:
		obj = &Update{}
	case KindBlock:
		obj = &Block{}
	case KindCertificate:
		obj = &Certificate{}
	default:
		return nil, fmt.Errorf("%w: %q", ErrUnknownKind, head.Kind)
	}
	if err := decMode.Unmarshal(b, obj); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrMalformed, head.Kind, err)
	}
	again, _, err := Encode(obj)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(again, b) {
		return nil, fmt.Errorf("%w: %s is not canonical DAG-CBOR", ErrMalformed, head.Kind)
	}
	return obj, nil
}

// Links lists the CIDs an object refers to: content (the shards it is made
// of) and lineage (parent, base, result, updates).
func Links(obj any) (content, lineage []cid.Cid) {
	refs := func(rs []ShardRef) []cid.Cid {
		out := make([]cid.Cid, len(rs))
		for i, r := range rs {
			out[i] = r.Link.Cid
		}
		return out
	}
	switch o := obj.(type) {
	case *Checkpoint:
		content = refs(o.Shards)
		if o.Parent != nil {
			lineage = append(lineage, o.Parent.Cid)
		}
	case *Update:
		content = refs(o.Shards)
		lineage = append(lineage, o.Base.Cid)
	case *Block:
		if o.Parent != nil {
			lineage = append(lineage, o.Parent.Cid)
		}
		lineage = append(lineage, o.Base.Cid, o.Result.Cid)
		for _, u := range o.Updates {
			lineage = append(lineage, u.Cid)
		}
	case *Certificate:
		lineage = append(lineage, o.Block.Cid)
	}
	return content, lineage
}
