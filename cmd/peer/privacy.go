package main

import (
	"context"
	"fmt"
	"io"

	"github.com/murmur-ml/murmur/learner"
)

func runPrivacy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "epsilon" && args[0] != "sigma") {
		return fmt.Errorf("%w: want `peer privacy epsilon --sigma S --sample-rate Q --steps T --delta D` or `peer privacy sigma --epsilon E --sample-rate Q --steps T --delta D`", errUsage)
	}
	sub := args[0]
	fs := newFlags("privacy "+sub, stderr)
	sigma := fs.Float64("sigma", 0, "noise multiplier σ (noise std / clipping norm)")
	eps := fs.Float64("epsilon", 0, "target ε (for `sigma`)")
	q := fs.Float64("sample-rate", 0, "sampling probability q of each step, in (0,1]")
	steps := fs.Int("steps", 0, "number of steps T")
	delta := fs.Float64("delta", 1e-5, "δ")
	asJSON := fs.Bool("json", false, "print one JSON object on stdout")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if *q <= 0 || *q > 1 || *steps < 1 {
		return fmt.Errorf("%w: need --sample-rate in (0,1] and --steps ≥ 1", errUsage)
	}
	if sub == "sigma" {
		s, err := learner.NoiseMultiplier(*eps, *delta, *q, *steps)
		if err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(stdout, map[string]float64{"sigma": s, "epsilon": *eps, "delta": *delta, "sample_rate": *q, "steps": float64(*steps)})
		}
		fmt.Fprintf(stdout, "σ = %.6f reaches ε ≤ %g at δ = %g after %d steps at q = %g\n", s, *eps, *delta, *steps, *q)
		return nil
	}
	if *sigma <= 0 {
		return fmt.Errorf("%w: need --sigma > 0", errUsage)
	}
	a := learner.NewAccountant()
	if err := a.Step(*sigma, *q, *steps); err != nil {
		return err
	}
	e, err := a.Epsilon(*delta)
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(stdout, map[string]float64{"epsilon": e, "sigma": *sigma, "delta": *delta, "sample_rate": *q, "steps": float64(*steps)})
	}
	fmt.Fprintf(stdout, "ε = %.6f at δ = %g (σ = %g, q = %g, %d steps; RDP accountant)\n", e, *delta, *sigma, *q, *steps)
	return nil
}
