package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/murmur-ml/murmur/learner"
	"github.com/murmur-ml/murmur/sim"
)

// matrixCell is one run of the attack matrix.
type matrixCell struct {
	Attack     string  `json:"attack"`
	Aggregator string  `json:"aggregator"`
	Byzantine  int     `json:"byzantine"`
	Accuracy   float64 `json:"final_accuracy"`
	// Drop is the honest run of the same rule minus this run, in points.
	Drop       float64 `json:"drop_points"`
	HeadsAgree bool    `json:"heads_agree"`
	HeadCID    string  `json:"head_cid"`
	Seconds    float64 `json:"seconds"`
}

// runMatrix runs every rule honestly and under every attack with cfg's
// Byzantine count, and prints accuracy (and the drop from the rule's own
// honest run) as a table.
func runMatrix(ctx context.Context, base sim.Config, rules, attacks []string, train, test *learner.Dataset, table, stderr io.Writer) ([]matrixCell, error) {
	var cells []matrixCell
	honest := map[string]float64{}
	for _, atk := range append([]string{learner.AttackNone}, attacks...) {
		for _, rule := range rules {
			cfg := base
			cfg.Agg.Rule = rule
			cfg.Attack, _ = learner.ParseAttack(atk)
			if atk == learner.AttackNone {
				cfg.Byzantine = 0
			}
			if err := cfg.Validate(); err != nil {
				return nil, fmt.Errorf("%s × %s: %w", atk, rule, err)
			}
			rep, err := sim.Run(ctx, cfg, train, test, nil)
			if err != nil {
				return nil, fmt.Errorf("%s × %s: %w", atk, rule, err)
			}
			if atk == learner.AttackNone {
				honest[rule] = rep.FinalAccuracy
			}
			c := matrixCell{Attack: atk, Aggregator: rule, Byzantine: cfg.Byzantine, Accuracy: rep.FinalAccuracy,
				Drop: 100 * (honest[rule] - rep.FinalAccuracy), HeadsAgree: rep.HeadsAgree, HeadCID: rep.HeadCID, Seconds: rep.Seconds}
			cells = append(cells, c)
			fmt.Fprintf(stderr, "matrix: %-10s × %-13s %6.2f%% (%+.2f) in %.0fs\n", atk, rule, 100*c.Accuracy, -c.Drop, c.Seconds)
		}
	}
	fmt.Fprintf(table, "\nfinal test accuracy %%, %d of %d peers Byzantine (in brackets: points lost against the same rule's honest run)\n\n", base.Byzantine, base.Peers)
	fmt.Fprintf(table, "| attack |")
	for _, r := range rules {
		fmt.Fprintf(table, " %s |", r)
	}
	fmt.Fprintf(table, "\n|---|%s\n", strings.Repeat("---|", len(rules)))
	for i := 0; i < len(cells); i += len(rules) {
		fmt.Fprintf(table, "| %s |", cells[i].Attack)
		for _, c := range cells[i : i+len(rules)] {
			if c.Attack == learner.AttackNone {
				fmt.Fprintf(table, " %.2f |", 100*c.Accuracy)
			} else {
				fmt.Fprintf(table, " %.2f (%+.1f) |", 100*c.Accuracy, -c.Drop)
			}
		}
		fmt.Fprintln(table)
	}
	return cells, nil
}
