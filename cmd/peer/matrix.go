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

// matrixResult is a whole matrix: its cells, each run's accuracy by round
// (for the report's plot) and the table as rows.
type matrixResult struct {
	Cells  []matrixCell
	Series []sim.Series
	Rows   [][]string
}

// runMatrixFractions runs runMatrix for each Byzantine fraction of the peers.
func runMatrixFractions(ctx context.Context, base sim.Config, rules, attacks []string, fractions []float64, train, test *learner.Dataset, table, stderr io.Writer) (*matrixResult, error) {
	res := &matrixResult{Rows: [][]string{append([]string{"Byzantine", "attack"}, rules...)}}
	for _, f := range fractions {
		cfg := base
		cfg.Byzantine = int(f*float64(cfg.Peers) + 0.5)
		if cfg.Byzantine == 0 && f > 0 {
			continue
		}
		atks := attacks
		if cfg.Byzantine == 0 {
			atks = nil // the honest runs only
		}
		cells, series, err := runMatrix(ctx, cfg, rules, atks, train, test, table, stderr)
		if err != nil {
			return nil, err
		}
		res.Cells = append(res.Cells, cells...)
		res.Series = append(res.Series, series...)
		for i := 0; i < len(cells); i += len(rules) {
			if cells[i].Attack == learner.AttackNone && cfg.Byzantine > 0 {
				continue
			}
			row := []string{fmt.Sprintf("%d of %d", cfg.Byzantine, cfg.Peers), cells[i].Attack}
			for _, c := range cells[i : i+len(rules)] {
				if c.Attack == learner.AttackNone {
					row = append(row, fmt.Sprintf("%.2f", 100*c.Accuracy))
				} else {
					row = append(row, fmt.Sprintf("%.2f (%+.1f)", 100*c.Accuracy, -c.Drop))
				}
			}
			res.Rows = append(res.Rows, row)
		}
	}
	return res, nil
}

// runMatrix runs every rule honestly and under every attack with cfg's
// Byzantine count, and prints accuracy (and the drop from the rule's own
// honest run) as a table.
func runMatrix(ctx context.Context, base sim.Config, rules, attacks []string, train, test *learner.Dataset, table, stderr io.Writer) ([]matrixCell, []sim.Series, error) {
	var cells []matrixCell
	var series []sim.Series
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
				return nil, nil, fmt.Errorf("%s × %s: %w", atk, rule, err)
			}
			rep, err := sim.Run(ctx, cfg, train, test, nil)
			if err != nil {
				return nil, nil, fmt.Errorf("%s × %s: %w", atk, rule, err)
			}
			acc := make([]float64, len(rep.Rounds))
			for i, r := range rep.Rounds {
				acc[i] = 100 * r.Accuracy
			}
			series = append(series, sim.Series{Name: fmt.Sprintf("%s × %s (%d byz)", rule, atk, cfg.Byzantine), Values: acc})
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
	return cells, series, nil
}
