package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/murmur-ml/murmur/daemon"
	"github.com/murmur-ml/murmur/p2p"
)

// runInit makes a home: key, commented config.toml, a one-validator
// genesis (this peer) unless one is given, and the data folders.
func runInit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("init", stderr)
	home := homeFlag(fs)
	genesis := fs.String("genesis", "", "copy this genesis file instead of making a one-peer network")
	network := fs.String("network", "murmur-local", "network name of the one-peer genesis")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *home == "" {
		return fmt.Errorf("%w: no --home and no home directory", errUsage)
	}
	cfgPath := filepath.Join(*home, "config.toml")
	if _, err := os.Stat(cfgPath); err == nil {
		return fmt.Errorf("%s exists: %s is already initialised (remove it to start over)", cfgPath, *home)
	}
	for _, d := range []string{*home, filepath.Join(*home, "data"), filepath.Join(*home, "store")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	priv, err := p2p.LoadOrCreateKey(filepath.Join(*home, "key"))
	if err != nil {
		return err
	}
	signer, err := p2p.NewKeySigner(priv)
	if err != nil {
		return err
	}
	id := signer.ID()
	genPath := filepath.Join(*home, "genesis.json")
	if *genesis != "" {
		g, err := daemon.LoadGenesis(*genesis)
		if err != nil {
			return err
		}
		if err := g.Write(genPath); err != nil {
			return err
		}
	} else {
		g := daemon.DefaultGenesis(*network, []daemon.Validator{{ID: id, Power: 1}})
		c, err := g.GenesisModel(ctx, nil)
		if err != nil {
			return err
		}
		g.Model.CID = c.String()
		if err := g.Validate(); err != nil {
			return err
		}
		if err := g.Write(genPath); err != nil {
			return err
		}
	}
	if err := os.WriteFile(cfgPath, []byte(daemon.ConfigTemplate), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "initialised %s\npeer id %s\nconfig  %s\ngenesis %s\n", *home, id, cfgPath, genPath)
	return nil
}

// loadHome reads a home's config (env overrides applied) and genesis.
func loadHome(home string) (daemon.Config, *daemon.Genesis, error) {
	if home == "" {
		return daemon.Config{}, nil, fmt.Errorf("%w: no --home and no home directory", errUsage)
	}
	path := filepath.Join(home, "config.toml")
	if _, err := os.Stat(path); err != nil {
		return daemon.Config{}, nil, fmt.Errorf("%w: %s: no config (run `peer init --home %s` first)", daemon.ErrConfig, path, home)
	}
	cfg, err := daemon.LoadConfig(path, os.Environ())
	if err != nil {
		return cfg, nil, err
	}
	g, err := daemon.LoadGenesis(daemon.Path(home, cfg.Genesis))
	if err != nil {
		return cfg, nil, err
	}
	return cfg, g, nil
}

func runStart(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("start", stderr)
	home := homeFlag(fs)
	logFormat := fs.String("log-format", "", "text or json (overrides log.format)")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (overrides log.level)")
	api := fs.String("api", "", "API listen address host:port (overrides api.listen)")
	listen := fs.String("listen", "", "comma-separated multiaddrs (overrides p2p.listen)")
	bootstrap := fs.String("bootstrap", "", "comma-separated bootstrap multiaddrs (overrides p2p.bootstrap)")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, gen, err := loadHome(*home)
	if err != nil {
		return err
	}
	flagSet := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { flagSet[f.Name] = true })
	if flagSet["log-format"] {
		cfg.Log.Format = *logFormat
	}
	if flagSet["log-level"] {
		cfg.Log.Level = *logLevel
	}
	if flagSet["api"] {
		cfg.API.Listen = *api
	}
	if flagSet["listen"] {
		cfg.P2P.Listen = splitList(*listen)
	}
	if flagSet["bootstrap"] {
		cfg.P2P.Bootstrap = splitList(*bootstrap)
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("flags: %w", err)
	}
	log := newLogger(stderr, cfg.Log)
	p, err := daemon.New(ctx, *home, cfg, gen, daemon.WithLogger(log))
	if err != nil {
		return err
	}
	apiErr := make(<-chan error)
	if cfg.API.Listen != "" {
		addr, errc, err := p.ServeAPI(ctx, cfg.API.Listen)
		if err != nil {
			_ = p.Run(canceled()) // closes what New opened
			return err
		}
		apiErr = errc
		log.Info("api listening", "url", "http://"+addr.String())
	}
	st := p.Status()
	log.Info("peer started", "peer", st.PeerID, "role", st.Role, "height", st.Height, "addrs", strings.Join(st.Addrs, " "))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- p.Run(ctx) }()
	select {
	case err = <-runErr:
	case err = <-apiErr:
		if err != nil {
			err = fmt.Errorf("api: %w", err)
			cancel()
			<-runErr
		} else {
			err = <-runErr // the API closed because we are stopping
		}
	}
	if err != nil {
		return err
	}
	log.Info("peer stopped cleanly", "height", p.Status().Height)
	return nil
}

func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

func splitList(s string) []string {
	var out []string
	for it := range strings.SplitSeq(s, ",") {
		if it = strings.TrimSpace(it); it != "" {
			out = append(out, it)
		}
	}
	return out
}

func newLogger(w io.Writer, c daemon.LogConfig) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// apiURL is the running peer's API base URL from --api or the home's config.
func apiURL(home, api string) (string, error) {
	if api != "" {
		if !strings.Contains(api, "://") {
			api = "http://" + api
		}
		return strings.TrimRight(api, "/"), nil
	}
	cfg, _, err := loadHome(home)
	if err != nil {
		return "", err
	}
	if cfg.API.Listen == "" {
		return "", fmt.Errorf("%w: api.listen is empty in %s: the peer serves no API", daemon.ErrConfig, filepath.Join(home, "config.toml"))
	}
	addr := cfg.API.Listen
	if h, port, ok := strings.Cut(addr, ":"); ok && (h == "0.0.0.0" || h == "") {
		addr = "127.0.0.1:" + port
	}
	return "http://" + addr, nil
}

var apiClient = &http.Client{Timeout: 10 * time.Second}

func getStatus(ctx context.Context, base string) (*daemon.Status, error) {
	var st daemon.Status
	if err := getJSON(ctx, base, "/status", &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// getJSON decodes the JSON answer of the peer's API at base+path into v.
func getJSON(ctx context.Context, base, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		return err
	}
	resp, err := apiClient.Do(req)
	if err != nil {
		return fmt.Errorf("no peer answers at %s (is it running?): %w", base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s%s: %s", base, path, resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(v); err != nil {
		return fmt.Errorf("%s%s: %w", base, path, err)
	}
	return nil
}

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", stderr)
	home := homeFlag(fs)
	api := fs.String("api", "", "the peer's API address (default: api.listen from the home's config)")
	asJSON := fs.Bool("json", false, "print one JSON object on stdout")
	if err := parse(fs, args); err != nil {
		return err
	}
	base, err := apiURL(*home, *api)
	if err != nil {
		return err
	}
	st, err := getStatus(ctx, base)
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(stdout, st)
	}
	acc := "not measured yet"
	if st.TestAccuracy != nil {
		acc = fmt.Sprintf("%.2f%% (height %d)", 100**st.TestAccuracy, st.AccuracyHeight)
	}
	last := "never"
	if st.LastCommitUnix > 0 {
		last = fmt.Sprintf("%s ago", time.Since(time.Unix(st.LastCommitUnix, 0)).Round(time.Second))
	}
	fmt.Fprintf(stdout, "peer      %s (%s) on %s\nheight    %d, round %d\nhead      %s\nlast      %s\naccuracy  %s\npeers     %d\n",
		st.PeerID, st.Role, st.Network, st.Height, st.Round, st.HeadCID, last, acc, st.Peers)
	if st.EpsilonSpent > 0 {
		fmt.Fprintf(stdout, "privacy   ε spent %.3f%s\n", st.EpsilonSpent, map[bool]string{true: " (budget exhausted: not contributing)"}[st.PrivacyExhausted])
	}
	if st.Equivocations > 0 {
		fmt.Fprintf(stdout, "evidence  %d equivocations seen\n", st.Equivocations)
	}
	return nil
}
