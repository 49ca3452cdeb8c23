package consensus

// GossipVerdict is what the gossip layer should do with a consensus message
// (the node maps it onto its transport's verdicts).
type GossipVerdict int

const (
	GossipAccept GossipVerdict = iota // valid now: deliver and relay
	GossipReject                      // malformed or wrongly signed: penalise the sender
	GossipIgnore                      // well formed but not checkable or useful yet: drop quietly
)

// CheckGossip judges a consensus payload before it is relayed: it must
// decode, come from a validator with a valid signature (a proposal from the
// round's proposer), and be for a height the receiver at height can use
// (any past one, the current one or the next). Past heights pass: a vote
// from a validator that fell behind is how the others learn it needs their
// commits. Commits of any height pass once their certificate verifies: they
// are how a validator catches up, and gossip delivers a payload once, so a
// commit ignored for being early would never come back. It is pure; with a Verifier safe for concurrent use it may
// run on the gossip validator's goroutines while the machine is stepped
// elsewhere.
func CheckGossip(cfg Config, ver Verifier, height uint64, data []byte) GossipVerdict {
	msg, err := Decode(data)
	if err != nil {
		return GossipReject
	}
	var h uint64
	switch v := msg.(type) {
	case *Proposal:
		h = v.Height
	case *Vote:
		h = v.Height
	case *Commit:
		h = v.Certificate.Height
	}
	if _, isCommit := msg.(*Commit); h > height+1 && !isCommit {
		return GossipIgnore
	}
	// The machine's own checks.
	switch v := msg.(type) {
	case *Proposal:
		if checkProposal(cfg, ver, v) != nil {
			return GossipReject
		}
	case *Vote:
		if checkVote(cfg, ver, v) != nil {
			return GossipReject
		}
	case *Commit:
		if v.Certificate.Verify(cfg.Network, cfg.Validators, ver) != nil || HashOf(v.Value) != v.Certificate.Value {
			return GossipReject
		}
	}
	return GossipAccept
}
