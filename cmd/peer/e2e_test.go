package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/murmur-ml/murmur/daemon"
)

// proc is one `peer start` process of a loopback testnet.
type proc struct {
	cmd  *exec.Cmd
	home string
	api  string
	log  *os.File
}

type testnet struct {
	t     *testing.T
	bin   string
	dir   string
	procs []*proc
}

// freeBase finds a port range nobody listens on (peer i uses base+10i and
// base+10i+1).
func freeBase(t *testing.T, peers int) int {
	for base := 30000 + os.Getpid()%200*100; base < 60000; base += 1000 {
		ok := true
		for i := range peers {
			for _, port := range []int{base + 10*i, base + 10*i + 1} {
				l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
				if err != nil {
					ok = false
					break
				}
				l.Close()
			}
		}
		if ok {
			return base
		}
	}
	t.Fatal("no free port range on loopback")
	return 0
}

func newTestnet(t *testing.T, n, trainers int, extra ...string) *testnet {
	if testing.Short() || os.Getenv("MURMUR_E2E") == "0" {
		t.Skip("end-to-end (builds the binary, runs processes): skipped by -short or MURMUR_E2E=0")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "peer")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		t.Fatalf("building peer: %v", err)
	}
	tn := &testnet{t: t, bin: bin, dir: filepath.Join(dir, "net")}
	args := append([]string{"testnet", "--n", fmt.Sprint(n), "--trainers", fmt.Sprint(trainers), "--out", tn.dir,
		"--base-port", fmt.Sprint(freeBase(t, n+trainers))}, extra...)
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("peer testnet: %v\n%s", err, out)
	}
	for i := range n + trainers {
		home := filepath.Join(tn.dir, fmt.Sprintf("peer%d", i))
		cfg, err := daemon.LoadConfig(filepath.Join(home, "config.toml"), nil)
		if err != nil {
			t.Fatal(err)
		}
		tn.procs = append(tn.procs, &proc{home: home, api: "http://" + cfg.API.Listen})
	}
	t.Cleanup(tn.killAll)
	return tn
}

func (tn *testnet) start(i int) {
	tn.t.Helper()
	p := tn.procs[i]
	f, err := os.OpenFile(filepath.Join(tn.dir, fmt.Sprintf("peer%d.log", i)), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		tn.t.Fatal(err)
	}
	p.log = f
	args := []string{"start", "--home", p.home}
	if lvl := os.Getenv("MURMUR_E2E_LOG_LEVEL"); lvl != "" {
		args = append(args, "--log-level", lvl)
	}
	p.cmd = exec.Command(tn.bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		tn.t.Fatal(err)
	}
}

// kill9 kills peer i without warning.
func (tn *testnet) kill9(i int) {
	p := tn.procs[i]
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
	p.cmd = nil
}

// stop sends SIGTERM and expects a clean exit.
func (tn *testnet) stop(i int) {
	tn.t.Helper()
	p := tn.procs[i]
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			tn.t.Errorf("peer %d after SIGTERM: %v (want exit 0)", i, err)
		}
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		tn.t.Errorf("peer %d did not stop within 30 s of SIGTERM", i)
	}
	p.cmd = nil
}

func (tn *testnet) killAll() {
	for i, p := range tn.procs {
		if p.cmd != nil {
			tn.kill9(i)
		}
		if p.log != nil {
			p.log.Close()
		}
	}
	keep := os.Getenv("MURMUR_E2E_LOGS")
	if keep != "" {
		_ = os.MkdirAll(keep, 0o755)
	}
	for i := range tn.procs {
		name := fmt.Sprintf("peer%d.log", i)
		b, _ := os.ReadFile(filepath.Join(tn.dir, name))
		if keep != "" {
			_ = os.WriteFile(filepath.Join(keep, name), b, 0o644)
		}
		if tn.t.Failed() {
			tn.t.Logf("--- peer%d log (commits, warnings, errors; last 60) ---\n%s", i, digest(b, 60))
		}
	}
}

// digest keeps the lines of a peer log that tell a failure's story
// (readiness, commits with their update counts, warnings, errors), the last
// n of them, with "level=" spelled "lvl=" so that CI's filter of INFO noise
// does not drop them.
func digest(log []byte, n int) string {
	var keep []string
	for _, l := range strings.Split(string(log), "\n") {
		if strings.Contains(l, "msg=committed") || strings.Contains(l, "ready") || strings.Contains(l, "caught") ||
			strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
			keep = append(keep, strings.Replace(l, "level=", "lvl=", 1))
		}
	}
	if len(keep) > n {
		keep = keep[len(keep)-n:]
	}
	return strings.Join(keep, "\n")
}

func (tn *testnet) status(i int) *daemon.Status {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := getStatus(ctx, tn.procs[i].api)
	if err != nil {
		return nil
	}
	return st
}

// waitHeight polls the peers' APIs until each listed peer has committed h.
func (tn *testnet) waitHeight(h uint64, timeout time.Duration, peers ...int) {
	tn.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		ok := true
		for _, i := range peers {
			st := tn.status(i)
			ok = ok && st != nil && st.Height >= h
		}
		if ok {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	tn.t.Fatalf("peers %v did not reach height %d within %v", peers, h, timeout)
}

// sameHead polls until the listed peers report the same height and head.
func (tn *testnet) sameHead(peers ...int) *daemon.Status {
	tn.t.Helper()
	var last []string
	for range 100 {
		var first *daemon.Status
		agree := true
		last = last[:0]
		for _, i := range peers {
			st := tn.status(i)
			if st == nil {
				agree = false
				break
			}
			last = append(last, fmt.Sprintf("peer%d %d %s", i, st.Height, st.HeadCID))
			if first == nil {
				first = st
			} else if st.Height != first.Height || st.HeadCID != first.HeadCID {
				if st.Height == first.Height {
					tn.t.Fatalf("heads diverge at height %d: %v", st.Height, last)
				}
				agree = false
			}
		}
		if agree {
			return first
		}
		time.Sleep(100 * time.Millisecond)
	}
	tn.t.Fatalf("peers never showed one head: %v", last)
	return nil
}

// TestLoopbackTestnet is DESIGN.md §6's end-to-end run: `peer testnet`,
// four `peer start` processes on loopback committing identical heads with
// rising accuracy; one validator killed with SIGKILL mid-round and
// restarted (the others go on, it catches up, nobody equivocates, no
// committed checkpoint is lost); a fifth, trainer-only peer started at
// height ≥ 5 catches up and contributes; every peer stops cleanly on
// SIGTERM.
func TestLoopbackTestnet(t *testing.T) {
	tn := newTestnet(t, 4, 1, "--steps", "30", "--collect-ticks", "60")
	for i := range 4 {
		tn.start(i)
	}
	all := []int{0, 1, 2, 3}
	tn.waitHeight(1, 90*time.Second, all...)
	tn.sameHead(all...)
	accEarly, hEarly := accuracy(t, tn, 0, 1)
	m := tn.measure(all)
	tn.waitHeight(5, 90*time.Second, all...)
	m.report("4 processes", all)
	st := tn.sameHead(all...)
	t.Logf("height %d head %s on all four", st.Height, st.HeadCID)
	// The head's test accuracy (each peer measures every new head) rises.
	accLate, hLate := accuracy(t, tn, 0, 5)
	if !(accLate > accEarly) {
		t.Fatalf("accuracy did not rise: %.4f at height %d, %.4f at height %d", accEarly, hEarly, accLate, hLate)
	}
	t.Logf("test accuracy %.2f%% at height %d → %.2f%% at height %d", 100*accEarly, hEarly, 100*accLate, hLate)

	// kill -9 a validator mid-round; the other three keep committing.
	before := tn.status(3)
	tn.kill9(3)
	m = tn.measure([]int{0, 1, 2})
	h := tn.status(0).Height
	tn.waitHeight(h+3, 90*time.Second, 0, 1, 2)
	m.report("one validator killed", []int{0, 1, 2})
	tn.start(3)
	var restored *daemon.Status
	for range 200 {
		if restored = tn.status(3); restored != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if restored == nil || restored.RestoredFromHeight < before.Height {
		t.Fatalf("restarted validator resumed at %+v, had committed %d before the kill", restored, before.Height)
	}
	h = tn.status(0).Height
	tn.waitHeight(h+1, 90*time.Second, all...)
	tn.sameHead(all...)
	// The checkpoint it had committed before the kill is still in its store.
	out, err := exec.Command(tn.bin, "inspect", before.HeadCID, "--home", tn.procs[3].home, "--json").CombinedOutput()
	if err != nil {
		t.Fatalf("checkpoint %s committed before the kill is gone: %v\n%s", before.HeadCID, err, out)
	}

	// A fifth peer, trainer only, joins at height ≥ 5.
	tn.start(4)
	joinStart := time.Now()
	h = tn.status(0).Height
	tn.waitHeight(h, 90*time.Second, 4)
	took := time.Since(joinStart)
	st4 := tn.status(4)
	t.Logf("figure: late peer caught up %d heights in %.2f s (start to head; 2NN checkpoint 797 KB)", st4.Height, took.Seconds())
	if st4.Role != "trainer" {
		t.Fatalf("fifth peer's role %q", st4.Role)
	}
	// It contributes from the next round on: its update is in every block
	// after the height it caught up to (its intent to train makes the
	// proposers wait for it; without one the first block closed just
	// before its update arrived).
	caught, fifth := st4.Height, st4.PeerID
	tn.waitHeight(caught+3, 90*time.Second, 0)
	var in []uint64
	for b := caught + 1; b <= caught+3; b++ {
		var v daemon.CommitView
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := getJSON(ctx, tn.procs[0].api, fmt.Sprintf("/commit/%d", b), &v)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range v.Updates {
			if u.Author == fifth {
				in = append(in, b)
			}
		}
	}
	t.Logf("figure: the fifth peer, caught up at height %d, contributed to blocks %v of %d..%d", caught, in, caught+1, caught+3)
	if len(in) != 3 {
		t.Fatalf("the fifth peer (caught up at %d) is in blocks %v, want every one of %d..%d", caught, in, caught+1, caught+3)
	}
	tn.sameHead(0, 1, 2, 3, 4)
	for i := range 5 {
		if st := tn.status(i); st.Equivocations != 0 {
			t.Fatalf("peer %d saw %d equivocations (a double sign)", i, st.Equivocations)
		}
	}
	for i := range 5 {
		tn.stop(i)
	}
}

// phase measures commit rate and bytes received between two moments.
type phase struct {
	t     *testing.T
	tn    *testnet
	start time.Time
	h0    uint64
	in0   map[int]int64
}

func (tn *testnet) measure(peers []int) *phase {
	p := &phase{t: tn.t, tn: tn, start: time.Now(), in0: map[int]int64{}}
	for _, i := range peers {
		st := tn.status(i)
		if st == nil {
			tn.t.Fatalf("peer %d has no status", i)
		}
		p.in0[i] = st.BytesIn
		if i == peers[0] {
			p.h0 = st.Height
		}
	}
	return p
}

// report logs rounds per minute and bytes received per peer per round.
func (p *phase) report(name string, peers []int) {
	el := time.Since(p.start)
	h := p.tn.status(peers[0]).Height - p.h0
	var in int64
	for _, i := range peers {
		in += p.tn.status(i).BytesIn - p.in0[i]
	}
	if h == 0 {
		return
	}
	p.t.Logf("figure: %s: %d heights in %.1f s = %.1f rounds/min; %.0f KB received per peer per round",
		name, h, el.Seconds(), float64(h)/el.Minutes(), float64(in)/float64(len(peers))/float64(h)/1000)
}

// accuracy waits for peer i to report the test accuracy of a head at
// height ≥ h and returns it with its height.
func accuracy(t *testing.T, tn *testnet, i int, h uint64) (float64, uint64) {
	t.Helper()
	for range 600 {
		if st := tn.status(i); st != nil && st.TestAccuracy != nil && st.AccuracyHeight >= h {
			return *st.TestAccuracy, st.AccuracyHeight
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("peer %d reported no accuracy for a head at height ≥ %d", i, h)
	return 0, 0
}
