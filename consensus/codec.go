package consensus

import (
	"encoding/binary"
	"fmt"
)

// Wire kinds: the first byte of an encoded message or record.
const (
	kindProposal byte = 1
	kindVote     byte = 2
	kindCommit   byte = 3
	kindLock     byte = 4
)

// Decoding limits, checked before anything is allocated.
const (
	maxIDLen   = 128
	maxSigLen  = 128
	maxVotes   = 1024
	maxMsgSize = 4 << 20
)

// Encode serialises a message (the gossip payload and the WAL record body).
func Encode(msg Message) []byte {
	var b []byte
	switch v := msg.(type) {
	case *Proposal:
		b = append(b, kindProposal)
		b = encodeProposal(b, v)
	case *Vote:
		b = append(b, kindVote)
		b = encodeVote(b, v)
	case *Commit:
		b = append(b, kindCommit)
		b = appendBytes(b, v.Value)
		b = encodeCert(b, &v.Certificate)
	default:
		panic(fmt.Sprintf("consensus: Encode of %T", msg))
	}
	return b
}

func encodeProposal(b []byte, p *Proposal) []byte {
	b = binary.AppendUvarint(b, p.Height)
	b = binary.AppendVarint(b, int64(p.Round))
	b = binary.AppendVarint(b, int64(p.ValidRound))
	b = appendBytes(b, p.Value)
	b = appendBytes(b, []byte(p.Proposer))
	return appendBytes(b, p.Signature)
}

func encodeVote(b []byte, v *Vote) []byte {
	b = append(b, byte(v.Type))
	b = binary.AppendUvarint(b, v.Height)
	b = binary.AppendVarint(b, int64(v.Round))
	b = append(b, v.Value[:]...)
	b = appendBytes(b, []byte(v.Validator))
	return appendBytes(b, v.Signature)
}

func encodeCert(b []byte, c *Certificate) []byte {
	b = binary.AppendUvarint(b, c.Height)
	b = binary.AppendVarint(b, int64(c.Round))
	b = append(b, c.Value[:]...)
	b = binary.AppendUvarint(b, uint64(len(c.Precommits)))
	for i := range c.Precommits {
		b = encodeVote(b, &c.Precommits[i])
	}
	return b
}

func appendBytes(b, x []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(x)))
	return append(b, x...)
}

// Decode parses a message. It bounds every length by what is left of the
// input (and by fixed limits) before allocating, and never panics.
func Decode(b []byte) (Message, error) {
	if len(b) == 0 || len(b) > maxMsgSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrInvalid, len(b))
	}
	d := &decoder{b: b[1:]}
	var msg Message
	switch b[0] {
	case kindProposal:
		msg = d.proposal()
	case kindVote:
		v := d.vote()
		msg = &v
	case kindCommit:
		c := &Commit{Value: d.bytes(maxMsgSize)}
		c.Certificate = d.cert()
		msg = c
	default:
		return nil, fmt.Errorf("%w: message kind %d", ErrInvalid, b[0])
	}
	if d.err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, d.err)
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrInvalid, len(d.b))
	}
	return msg, nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format, args...)
	}
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	// Canonical encodings only: one message, one byte string, one gossip ID.
	if n <= 0 || n != len(binary.AppendUvarint(nil, v)) {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) round() int32 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 || n != len(binary.AppendVarint(nil, v)) || v < -1 || v > 1<<30 {
		d.fail("bad round")
		return 0
	}
	d.b = d.b[n:]
	return int32(v)
}

func (d *decoder) bytes(limit int) []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(limit) || n > uint64(len(d.b)) {
		d.fail("length %d exceeds %d or the %d bytes left", n, limit, len(d.b))
		return nil
	}
	out := append([]byte(nil), d.b[:n]...)
	d.b = d.b[n:]
	return out
}

func (d *decoder) hash() Hash {
	var h Hash
	if d.err != nil {
		return h
	}
	if len(d.b) < len(h) {
		d.fail("truncated hash")
		return h
	}
	copy(h[:], d.b)
	d.b = d.b[len(h):]
	return h
}

func (d *decoder) proposal() *Proposal {
	p := &Proposal{Height: d.uvarint(), Round: d.round(), ValidRound: d.round()}
	p.Value = d.bytes(maxMsgSize)
	p.Proposer = string(d.bytes(maxIDLen))
	p.Signature = d.bytes(maxSigLen)
	return p
}

func (d *decoder) vote() Vote {
	var v Vote
	if d.err == nil && len(d.b) > 0 {
		v.Type = StepType(d.b[0])
		d.b = d.b[1:]
	} else {
		d.fail("truncated vote")
	}
	v.Height, v.Round, v.Value = d.uvarint(), d.round(), d.hash()
	v.Validator = string(d.bytes(maxIDLen))
	v.Signature = d.bytes(maxSigLen)
	return v
}

func (d *decoder) cert() Certificate {
	c := Certificate{Height: d.uvarint(), Round: d.round(), Value: d.hash()}
	n := d.uvarint()
	// A vote takes at least 36 bytes: never allocate more than the input holds.
	if n > maxVotes || n > uint64(len(d.b))/36 {
		d.fail("%d votes in %d bytes", n, len(d.b))
		return c
	}
	c.Precommits = make([]Vote, 0, n)
	for range n {
		c.Precommits = append(c.Precommits, d.vote())
	}
	return c
}

// EncodeRecord serialises a WAL record.
func EncodeRecord(r Record) []byte {
	switch {
	case r.Proposal != nil:
		return Encode(r.Proposal)
	case r.Vote != nil:
		return Encode(r.Vote)
	case r.Commit != nil:
		return Encode(r.Commit)
	case r.Lock != nil:
		b := []byte{kindLock}
		b = binary.AppendUvarint(b, r.Lock.Height)
		b = binary.AppendVarint(b, int64(r.Lock.Round))
		return appendBytes(b, r.Lock.Value)
	}
	panic("consensus: empty record")
}

// DecodeRecord parses a WAL record.
func DecodeRecord(b []byte) (Record, error) {
	if len(b) > 0 && b[0] == kindLock {
		d := &decoder{b: b[1:]}
		l := &Lock{Height: d.uvarint(), Round: d.round(), Value: d.bytes(maxMsgSize)}
		if d.err != nil || len(d.b) != 0 {
			return Record{}, fmt.Errorf("%w: lock record", ErrInvalid)
		}
		return Record{Lock: l}, nil
	}
	msg, err := Decode(b)
	if err != nil {
		return Record{}, err
	}
	switch v := msg.(type) {
	case *Proposal:
		return Record{Proposal: v}, nil
	case *Vote:
		return Record{Vote: v}, nil
	case *Commit:
		return Record{Commit: v}, nil
	}
	return Record{}, fmt.Errorf("%w: record kind", ErrInvalid)
}
