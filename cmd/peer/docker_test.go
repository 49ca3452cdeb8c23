package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/murmur-ml/murmur/learner"
)

// TestDockerTestnet runs `peer testnet`'s docker-compose.yml: four peers as
// containers of a FROM scratch image on a private bridge network. It pauses
// one (SIGSTOP to its processes), disconnects one from the network, and
// restarts one; the heads never diverge and commits resume after each heal.
// It needs a Docker engine and docker-compose: set MURMUR_DOCKER_E2E=1
// (scripts/test does when they are there).
func TestDockerTestnet(t *testing.T) {
	tn, project, compose := dockerTestnet(t, "")
	docker := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("docker", args...).CombinedOutput(); err != nil {
			t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	compose("up", "-d", "--build")
	all := []int{0, 1, 2, 3}
	tn.waitHeight(3, 120*time.Second, all...)
	tn.sameHead(all...)

	container := func(i int) string { return fmt.Sprintf("%s_peer%d_1", project, i) }

	// Pause one: the other three keep committing; after unpausing it
	// catches up to the same head.
	compose("pause", "peer1")
	h := tn.status(0).Height
	tn.waitHeight(h+2, 90*time.Second, 0, 2, 3)
	compose("unpause", "peer1")
	h = tn.status(0).Height
	tn.waitHeight(h+1, 90*time.Second, all...)
	tn.sameHead(all...)
	t.Logf("pause/unpause peer1: commits went on, heads agree at %d", tn.status(0).Height)

	// Partition one: disconnect it from the network, then reconnect.
	netName := project + "_murmur"
	docker("network", "disconnect", netName, container(2))
	h = tn.status(0).Height
	tn.waitHeight(h+2, 90*time.Second, 0, 1, 3)
	docker("network", "connect", "--alias", "peer2", netName, container(2))
	h = tn.status(0).Height
	tn.waitHeight(h+1, 120*time.Second, all...)
	tn.sameHead(all...)
	t.Logf("partition/heal peer2: commits went on, heads agree at %d", tn.status(0).Height)

	// Restart one (SIGTERM, then start again from its home).
	compose("restart", "-t", "20", "peer3")
	h = tn.status(0).Height
	tn.waitHeight(h+2, 120*time.Second, all...)
	st := tn.sameHead(all...)
	t.Logf("restart peer3: heads agree at %d (%s)", st.Height, st.HeadCID)
	for i := range 4 {
		if s := tn.status(i); s.Equivocations != 0 {
			t.Fatalf("peer %d saw %d equivocations", i, s.Equivocations)
		}
	}
	// The published API can be reached only on loopback.
	if !strings.Contains(compose("config"), "127.0.0.1:") {
		t.Fatal("compose file publishes an API beyond loopback")
	}
}

// TestDockerMDNS runs the compose testnet with no bootstrap peers: the four
// containers find each other only by mDNS on their bridge network, and
// commit the same heads.
func TestDockerMDNS(t *testing.T) {
	tn, _, compose := dockerTestnet(t, `services:
  peer0: {environment: {MURMUR_P2P_BOOTSTRAP: "", MURMUR_P2P_MDNS: "true"}}
  peer1: {environment: {MURMUR_P2P_BOOTSTRAP: "", MURMUR_P2P_MDNS: "true"}}
  peer2: {environment: {MURMUR_P2P_BOOTSTRAP: "", MURMUR_P2P_MDNS: "true"}}
  peer3: {environment: {MURMUR_P2P_BOOTSTRAP: "", MURMUR_P2P_MDNS: "true"}}
`)
	if cfg := compose("config"); strings.Contains(cfg, "/p2p/") {
		t.Fatalf("the mDNS testnet still names bootstrap peers:\n%s", cfg)
	}
	compose("up", "-d", "--build")
	all := []int{0, 1, 2, 3}
	tn.waitHeight(3, 120*time.Second, all...)
	st := tn.sameHead(all...)
	for i := range 4 {
		if s := tn.status(i); s.Peers < 3 {
			t.Fatalf("peer %d knows %d peers, want the 3 others", i, s.Peers)
		}
	}
	t.Logf("mDNS only: 4 containers found each other and agree at height %d (%s)", st.Height, st.HeadCID)
}

// dockerTestnet writes `peer testnet`'s homes and compose file (plus an
// override file, if given) with a static binary and MNIST beside them, and
// returns the compose runner; everything is taken down when the test ends.
// It needs a Docker engine and docker-compose: set MURMUR_DOCKER_E2E=1
// (scripts/test does when they are there).
func dockerTestnet(t *testing.T, override string) (*testnet, string, func(args ...string) string) {
	t.Helper()
	if os.Getenv("MURMUR_DOCKER_E2E") != "1" {
		t.Skip("set MURMUR_DOCKER_E2E=1 to run the docker testnet (needs docker and docker-compose)")
	}
	tn := newTestnet(t, 4, 0, "--steps", "30", "--collect-ticks", "30")
	static := exec.Command("go", "build", "-o", filepath.Join(tn.dir, "peer"), ".")
	static.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := static.CombinedOutput(); err != nil {
		t.Fatalf("static build: %v\n%s", err, out)
	}
	mnist, err := learner.DefaultMNISTDir()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(tn.dir, "mnist"), 0o755); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(mnist, "*.gz"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tn.dir, "mnist", filepath.Base(f)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fileArgs := []string{"-f", filepath.Join(tn.dir, "docker-compose.yml")}
	if override != "" {
		path := filepath.Join(tn.dir, "docker-compose.override.yml")
		if err := os.WriteFile(path, []byte(override), 0o644); err != nil {
			t.Fatal(err)
		}
		fileArgs = append(fileArgs, "-f", path)
	}
	project := fmt.Sprintf("murmure2e%d%s", os.Getpid(), strings.ToLower(strings.TrimPrefix(t.Name(), "TestDocker")))
	run := func(args ...string) *exec.Cmd {
		return exec.Command("docker-compose", append(append([]string{"-p", project}, fileArgs...), args...)...)
	}
	compose := func(args ...string) string {
		t.Helper()
		out, err := run(args...).CombinedOutput()
		if err != nil {
			t.Fatalf("docker-compose %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := run("logs", "--tail", "40").CombinedOutput()
			t.Logf("container logs:\n%s", out)
		}
		_ = run("down", "-t", "5", "--rmi", "local").Run()
	})
	return tn, project, compose
}
