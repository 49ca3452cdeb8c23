// Command peer is murmur's command line: one binary for running a peer,
// simulating a network, training centrally and inspecting what a peer
// stores. See the README for the commands and what they print.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// errUsage marks a command-line mistake: exit status 2 instead of 1.
var errUsage = errors.New("usage")

type command struct {
	name, args, summary string
	run                 func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"init", "[--home DIR] [--genesis FILE]", "make a peer home: key, commented config.toml, genesis, data folders", runInit},
		{"testnet", "--n N --out DIR [--trainers M]", "write N peer homes with one shared genesis and a docker-compose.yml", runTestnet},
		{"start", "[--home DIR] [--log-format text|json] [--api ADDR]", "run a peer until SIGINT/SIGTERM", runStart},
		{"status", "[--home DIR] [--json]", "ask the running peer: height, head CID, round, peers, accuracy", runStatus},
		{"sim", "[--peers N] [--rounds R] [--byzantine F --attack NAME] [--aggregator NAME] [--partition P] [--dp-sigma S --dp-clip C] [--seed X] [--out DIR] [--json]",
			"simulate a network of peers learning MNIST in this process", runSim},
		{"train", "--centralized [--epochs E] [--json]", "train the model on all of MNIST on this machine", runTrain},
		{"inspect", "CID|FILE.car [--home DIR] [--json] [--verify]", "what a CID is, verified: shapes, statistics, links, signatures", runInspect},
		{"export", "CID --car FILE [--home DIR]", "write an object and everything it links to as a CAR v1 file", runExport},
		{"import", "FILE.car [--home DIR]", "verify a CAR file completely, then store its blocks", runImport},
		{"privacy", "epsilon --sigma S --sample-rate Q --steps T --delta D [--json]", "privacy accounting (Rényi DP of the sampled Gaussian mechanism)", runPrivacy},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, args[1:], stdout, stderr)
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			fmt.Fprintf(stderr, "peer %s: %v\n", c.name, err)
			return 2
		default:
			fmt.Fprintf(stderr, "peer %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "peer: unknown command %q (run `peer help`)\n", args[0])
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "peer: a murmur peer — gossip learning with BFT-finalised, content-addressed models")
	fmt.Fprintln(w, "\nusage:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  peer %s %s\n      %s\n", c.name, c.args, c.summary)
	}
	fmt.Fprintln(w, "\nRun `peer COMMAND --help` for the flags of one command.")
}

// newFlags makes a flag set whose errors come back as errUsage.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("peer "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parse parses args and rejects stray positional arguments.
func parse(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(io.Discard) // errors are reported once, by run
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(os.Stderr)
			fs.PrintDefaults()
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
