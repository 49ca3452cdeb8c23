package consensus

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/murmur-ml/murmur/consensus/wal"
)

// seeds is how many schedules the Byzantine tests run (MURMUR_CONSENSUS_SEEDS
// raises it for soak runs).
func seeds(t *testing.T, def int) int {
	if s, err := strconv.Atoi(os.Getenv("MURMUR_CONSENSUS_SEEDS")); err == nil && s > 0 {
		return s
	}
	if testing.Short() {
		return def / 10
	}
	return def
}

func TestHonestNetworkDecides(t *testing.T) {
	net := newTestNet(t, 4, 1, nil)
	net.run(20, 5000)
	if v := net.checkAgreement(); len(v) > 0 {
		t.Fatal(v)
	}
	for _, nd := range net.nodes {
		if len(nd.decided) < 20 {
			t.Fatalf("%s decided %d heights", nd.id, len(nd.decided))
		}
	}
}

// TestByzantineSchedules runs many seeded schedules of 4 validators with one
// Byzantine (equivocating, conflicting proposals, or silent) over a lossy,
// reordering, duplicating network: agreement always, every height decided,
// and every equivocation that reached an honest validator is evidenced.
func TestByzantineSchedules(t *testing.T) {
	n := seeds(t, 1000)
	t.Logf("%d seeds × 20 heights × {equivocate, silent}", n)
	for seed := 1; seed <= n; seed++ {
		for _, b := range []int{equivocate, silent} {
			byz := seed % 4
			net := newTestNet(t, 4, uint64(seed), map[int]int{byz: b})
			net.drop, net.dup = 0.05, 0.05
			net.run(20, 20000)
			if v := net.checkAgreement(); len(v) > 0 {
				t.Fatalf("seed %d behaviour %d: safety violated: %v", seed, b, v)
			}
			if !net.allDecided(20) {
				t.Fatalf("seed %d behaviour %d: not every honest validator decided 20 heights by tick %d", seed, b, net.now)
			}
			if b == equivocate {
				found := false
				for _, evs := range net.evidence {
					for _, ev := range evs {
						found = found || ev.A.Validator == net.nodes[byz].id
						if ev.A.Validator != net.nodes[byz].id || ev.A.Value == ev.B.Value {
							t.Fatalf("seed %d: bogus evidence %+v", seed, ev)
						}
					}
				}
				if !found {
					t.Fatalf("seed %d: the equivocator was never caught", seed)
				}
			}
		}
	}
}

// TestCheckerFindsViolationBeyondF: with 2 of 4 colluding equivocators
// (f ≥ n/3) the same checker must find a safety violation on some seed,
// or it proves nothing.
func TestCheckerFindsViolationBeyondF(t *testing.T) {
	for seed := 1; seed <= 200; seed++ {
		net := newTestNet(t, 4, uint64(seed), map[int]int{1: equivocate, 3: equivocate})
		net.run(10, 4000)
		if v := net.checkAgreement(); len(v) > 0 {
			t.Logf("seed %d: violation found as expected: %s", seed, v[0])
			return
		}
	}
	t.Fatal("no violation in 200 seeds with 2 of 4 Byzantine: the checker cannot fail")
}

func TestPartitions(t *testing.T) {
	for _, tc := range []struct {
		name     string
		side     func(i int) int
		majority int // nodes on the side that may still decide (-1: none)
	}{
		{"1|3", func(i int) int { return map[bool]int{true: 0, false: 1}[i == 0] }, 1},
		{"2|2", func(i int) int { return i / 2 }, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			net := newTestNet(t, 4, 7, nil)
			net.cut = func(a, b int) bool { return tc.side(a) != tc.side(b) }
			net.run(1000, 600)
			before := make([]int, 4)
			for i, nd := range net.nodes {
				before[i] = len(nd.decided)
				minority := tc.majority == -1 || tc.side(i) != tc.majority
				if minority && before[i] > 0 {
					t.Fatalf("%s in a minority decided %d heights", nd.id, before[i])
				}
				if !minority && before[i] == 0 {
					t.Fatalf("%s in the majority decided nothing", nd.id)
				}
			}
			net.cut = nil
			target := 0
			for _, b := range before {
				target = max(target, b)
			}
			net.run(target+5, net.now+20000)
			if !net.allDecided(target + 5) {
				t.Fatalf("after healing not all decided %d heights by tick %d", target+5, net.now)
			}
			if v := net.checkAgreement(); len(v) > 0 {
				t.Fatal(v)
			}
		})
	}
}

// TestCrashAtEveryPersistPoint crashes one validator right after each
// record it makes durable (before it sends anything of that batch),
// restarts it from its log, and checks that it never signs two values for
// one height, round and step, and that all keep deciding.
func TestCrashAtEveryPersistPoint(t *testing.T) {
	base := newTestNet(t, 4, 3, nil)
	base.run(5, 5000)
	points := base.nodes[2].persists
	t.Logf("validator v02 makes %d records durable over 5 heights", points)
	for at := 1; at <= points; at++ {
		net := newTestNet(t, 4, 3, nil)
		net.crashAt[2] = at
		net.run(5, 20000)
		if v := net.checkAgreement(); len(v) > 0 {
			t.Fatalf("crash at record %d: %v", at, v)
		}
		if !net.allDecided(5) {
			t.Fatalf("crash at record %d: not all decided 5 heights", at)
		}
		if net.nodes[2].crashes != 1 {
			t.Fatalf("crash at record %d did not happen", at)
		}
	}
}

// TestRestoreRefusesContradictoryLog: a log with two different votes for
// one (h, r, step) is the invariant broken; Restore says so.
func TestRestoreRefusesContradictoryLog(t *testing.T) {
	net := newTestNet(t, 4, 1, nil)
	nd := net.nodes[0]
	a := &Vote{Type: StepPrevote, Height: 1, Round: 0, Value: HashOf([]byte("a")), Validator: nd.id}
	b := &Vote{Type: StepPrevote, Height: 1, Round: 0, Value: HashOf([]byte("b")), Validator: nd.id}
	m := net.newMachine(nd)
	if err := m.Restore([]Record{{Vote: a}, {Vote: b}}); err == nil {
		t.Fatal("contradictory log accepted")
	}
}

func TestProposerRoundRobin(t *testing.T) {
	vs, _ := NewValidatorSet([]Validator{{"a", 1}, {"b", 2}, {"c", 1}})
	counts := map[string]int{}
	for r := range int32(400) {
		counts[vs.Proposer(1, r)]++
	}
	if counts["b"] != 200 || counts["a"] != 100 || counts["c"] != 100 {
		t.Fatalf("proposer shares %v, want 1:2:1", counts)
	}
	if vs.Proposer(5, 3) != vs.Proposer(5, 3) {
		t.Fatal("proposer is not a function")
	}
	for _, bad := range [][]Validator{nil, {{"a", 0}}, {{"a", 1}, {"a", 1}}, {{"", 1}}} {
		if _, err := NewValidatorSet(bad); err == nil {
			t.Errorf("validator set %v accepted", bad)
		}
	}
}

func TestCodecRoundTrip(t *testing.T) {
	net := newTestNet(t, 4, 2, nil)
	net.run(1, 1000)
	c := net.nodes[0].decided[0]
	for _, msg := range []Message{&c, &c.Certificate.Precommits[0], &Proposal{Height: 3, Round: 2, ValidRound: 1, Value: []byte("x"), Proposer: "v01", Signature: []byte{1}}} {
		got, err := Decode(Encode(msg))
		if err != nil || !bytes.Equal(Encode(got), Encode(msg)) || fmt.Sprintf("%T", got) != fmt.Sprintf("%T", msg) {
			t.Fatalf("round trip of %T: %v", msg, err)
		}
	}
	for _, r := range net.nodes[0].wal {
		got, err := DecodeRecord(EncodeRecord(r))
		if err != nil || !bytes.Equal(EncodeRecord(got), EncodeRecord(r)) {
			t.Fatalf("record round trip: %v", err)
		}
	}
}

func TestStepRejectsBadMessages(t *testing.T) {
	net := newTestNet(t, 4, 2, nil)
	m := net.nodes[0].m
	good := &Vote{Type: StepPrevote, Height: 1, Round: 0, Value: HashOf([]byte("x")), Validator: "v01"}
	good.Signature, _ = net.nodes[1].signer.Sign(good.SignBytes("test"))
	forged := *good
	forged.Validator = "v02" // v01's signature under v02's name
	outsider := *good
	outsider.Validator = "mallory"
	otherNet := *good
	otherNet.Signature, _ = net.nodes[1].signer.Sign(good.SignBytes("another-network"))
	wrongProposer := &Proposal{Height: 1, Round: 0, ValidRound: -1, Value: []byte("v"), Proposer: "v03"}
	if net.cfg.Validators.Proposer(1, 0) == "v03" {
		wrongProposer.Proposer = "v02"
	}
	wrongProposer.Signature, _ = net.nodes[net.index(wrongProposer.Proposer)].signer.Sign(wrongProposer.SignBytes("test"))
	for name, msg := range map[string]Message{
		"forged signature":  &forged,
		"not a validator":   &outsider,
		"other network":     &otherNet,
		"wrong proposer":    wrongProposer,
		"bad type":          &Vote{Type: 9, Height: 1, Validator: "v01"},
		"bad certificate":   &Commit{Value: []byte("x"), Certificate: Certificate{Height: 1, Value: HashOf([]byte("x"))}},
		"negative round":    &Vote{Type: StepPrevote, Height: 1, Round: -2, Validator: "v01"},
		"empty proposal":    &Proposal{Height: 1, Round: 0, ValidRound: -1, Proposer: net.cfg.Validators.Proposer(1, 0)},
		"valid round ahead": &Proposal{Height: 1, Round: 0, ValidRound: 0, Value: []byte("v"), Proposer: net.cfg.Validators.Proposer(1, 0)},
	} {
		if err := m.Step(msg); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
	if err := m.Step(good); err != nil {
		t.Fatalf("good vote refused: %v", err)
	}
	if err := m.Step(good); err != nil {
		t.Fatalf("duplicate vote refused: %v (duplicates are idempotent)", err)
	}
}

func FuzzDecode(f *testing.F) {
	net := newTestNet(f, 4, 2, nil)
	net.run(1, 1000)
	c := net.nodes[0].decided[0]
	f.Add(Encode(&c))
	f.Add(Encode(&c.Certificate.Precommits[0]))
	f.Add(Encode(&Proposal{Height: 1, Round: 0, ValidRound: -1, Value: []byte("v"), Proposer: "v00"}))
	f.Fuzz(func(t *testing.T, b []byte) {
		verdict := CheckGossip(net.cfg, net.ver, 1, b)
		msg, err := Decode(b)
		if err != nil {
			if verdict != GossipReject {
				t.Fatalf("undecodable payload judged %v", verdict)
			}
			return
		}
		again, err := Decode(Encode(msg))
		if err != nil || !bytes.Equal(Encode(again), b) {
			t.Fatalf("decoded message does not survive a round trip: %v", err)
		}
	})
}

// FuzzSchedule lets the fuzzer pick the network's seed, loss, duplication,
// delay and Byzantine behaviour: agreement and validity are the properties.
func FuzzSchedule(f *testing.F) {
	f.Add(uint64(1), uint8(5), uint8(5), uint8(3), uint8(0), uint8(1))
	f.Fuzz(func(t *testing.T, seed uint64, drop, dup, delay, byz, behavior uint8) {
		net := newTestNet(t, 4, seed, map[int]int{int(byz % 4): int(behavior % 3)})
		net.drop, net.dup, net.maxDelay = float64(drop%30)/100, float64(dup%30)/100, 1+int(delay%6)
		net.run(5, 5000)
		if v := net.checkAgreement(); len(v) > 0 {
			t.Fatal(v)
		}
		for _, nd := range net.nodes {
			for _, c := range nd.decided {
				if len(c.Value) == 0 {
					t.Fatal("decided an empty value")
				}
			}
		}
	})
}

// TestCrashWithFileWAL runs one validator's log through a real file: each
// crash tears the record being written in half (the write that was cut off);
// the restart repairs the tail, restores from what is whole and carries on.
func TestCrashWithFileWAL(t *testing.T) {
	base := newTestNet(t, 4, 5, nil)
	base.run(4, 5000)
	points := base.nodes[1].persists
	for at := 1; at <= points; at += 3 {
		path := filepath.Join(t.TempDir(), "wal")
		net := newTestNet(t, 4, 5, nil)
		w, _, _, err := wal.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		net.onPersist = func(i int, rec Record) bool {
			if i != 1 {
				return true
			}
			b := EncodeRecord(rec)
			if net.nodes[1].persists == at {
				// Torn write: half the record reaches the disk, then the crash.
				_ = w.Append(b)
				w.Close()
				full, _ := os.ReadFile(path)
				_ = os.WriteFile(path, full[:len(full)-len(b)/2], 0o600)
				var recs [][]byte
				var rep wal.Repair
				if w, recs, rep, err = wal.Open(path); err != nil || rep.TornBytes == 0 {
					t.Fatalf("reopen after torn write: %v %+v", err, rep)
				}
				net.nodes[1].wal = nil
				for _, r := range recs {
					dr, err := DecodeRecord(r)
					if err != nil {
						t.Fatal(err)
					}
					net.nodes[1].wal = append(net.nodes[1].wal, dr)
				}
				return false // crash now
			}
			if err := w.Append(b); err != nil {
				t.Fatal(err)
			}
			return true
		}
		net.run(4, 20000)
		w.Close()
		if v := net.checkAgreement(); len(v) > 0 {
			t.Fatalf("torn write at record %d: %v", at, v)
		}
		if !net.allDecided(4) || net.nodes[1].crashes != 1 {
			t.Fatalf("torn write at record %d: decided %d, crashes %d", at, len(net.nodes[1].decided), net.nodes[1].crashes)
		}
	}
}

// TestValidityVerdicts: Reject makes every validator prevote nil (no value
// is decided in that round); NotYet holds the prevote until Recheck finds
// the data has arrived.
func TestValidityVerdicts(t *testing.T) {
	t.Run("reject", func(t *testing.T) {
		net := newTestNet(t, 4, 21, nil)
		proposer := net.index(net.cfg.Validators.Proposer(1, 0))
		for _, nd := range net.nodes {
			nd.m.valid = func(h uint64, v []byte) Verdict {
				if bytes.Contains(v, []byte(" by "+net.nodes[proposer].id)) && h == 1 {
					return Reject
				}
				return Accept
			}
		}
		net.run(1, 2000)
		c := net.nodes[0].decided[0]
		if c.Certificate.Round == 0 || bytes.Contains(c.Value, []byte(net.nodes[proposer].id)) {
			t.Fatalf("a rejected proposal was decided: round %d value %q", c.Certificate.Round, c.Value)
		}
	})
	t.Run("not yet", func(t *testing.T) {
		net := newTestNet(t, 4, 22, nil)
		arrived := false
		net.cfg.TimeoutPropose = 1000 // long enough that waiting, not timing out, is what happens
		for _, nd := range net.nodes {
			nd.m = net.newMachine(nd)
			nd.m.valid = func(uint64, []byte) Verdict {
				if !arrived {
					return NotYet
				}
				return Accept
			}
			nd.m.Start()
		}
		net.run(1, 50)
		for _, nd := range net.nodes {
			if len(nd.decided) != 0 || nd.m.CurrentStep() != StepPropose {
				t.Fatalf("%s moved on while its data was missing: step %v", nd.id, nd.m.CurrentStep())
			}
		}
		arrived = true
		for i, nd := range net.nodes {
			nd.m.Recheck()
			net.drain(i)
		}
		net.run(1, 500)
		if !net.allDecided(1) || net.nodes[0].decided[0].Certificate.Round != 0 {
			t.Fatalf("the value was not decided in round 0 once its data arrived: %d decided, %+v", len(net.nodes[0].decided), net.nodes[0].m.timers)
		}
	})
}

func TestCheckGossip(t *testing.T) {
	net := newTestNet(t, 4, 2, nil)
	net.run(2, 2000)
	c := net.nodes[0].decided[1] // height 2
	vote := c.Certificate.Precommits[0]
	forged := vote
	forged.Value = HashOf([]byte("other"))
	tests := []struct {
		name   string
		data   []byte
		height uint64
		want   GossipVerdict
	}{
		{"vote at height", Encode(&vote), 2, GossipAccept},
		{"vote for next height", Encode(&vote), 1, GossipAccept},
		{"vote of a peer that is behind", Encode(&vote), 9, GossipAccept},
		{"future vote", Encode(&vote), 0, GossipIgnore},
		{"forged vote", Encode(&forged), 2, GossipReject},
		{"commit", Encode(&c), 2, GossipAccept},
		{"old commit (catch-up)", Encode(&c), 9, GossipAccept},
		{"future commit (held for catch-up)", Encode(&c), 0, GossipAccept},
		{"garbage", []byte{1, 2, 3}, 2, GossipReject},
		{"empty", nil, 2, GossipReject},
	}
	for _, tc := range tests {
		if got := CheckGossip(net.cfg, net.ver, tc.height, tc.data); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
