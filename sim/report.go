package sim

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"html/template"
	"math"
	"os"
	"path/filepath"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Series is one line of a plot: a configuration's values by round.
type Series struct {
	Name   string
	Values []float64 // by round, starting at round 1
}

// Output is what WriteOutput writes under --out.
type Output struct {
	Title   string
	Report  Report
	Summary any      // the --json summary (report.json)
	Compare []Series // accuracy of other configurations (the attack matrix), plotted beside this run
	Matrix  [][]string
	Extra   map[string]string // more lines for the HTML report
}

// WriteOutput writes rounds.csv, report.json, plots (PNG and SVG:
// accuracy, bytes per round, round time) and report.html tying them
// together.
func WriteOutput(dir string, o Output) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := writeCSV(filepath.Join(dir, "rounds.csv"), o.Report.Rounds); err != nil {
		return err
	}
	b, err := json.MarshalIndent(o.Summary, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	rs := o.Report.Rounds
	acc := Series{Name: "this run", Values: pick(rs, func(r Round) float64 { return 100 * r.Accuracy })}
	plots := []struct {
		file, title, y string
		series         []Series
	}{
		{"accuracy", "Test accuracy of the committed head", "accuracy (%)", append([]Series{acc}, o.Compare...)},
		{"bytes", "Bytes received per peer per round", "KB", []Series{{Name: "model traffic", Values: pick(rs, func(r Round) float64 { return float64(r.BytesPerPeer) / 1000 })}}},
		{"round-time", "Round time", "seconds", []Series{
			{Name: "commit to commit", Values: pick(rs, func(r Round) float64 { return r.Seconds })},
			{Name: "training", Values: pick(rs, func(r Round) float64 { return r.TrainSeconds })},
			{Name: "aggregation", Values: pick(rs, func(r Round) float64 { return r.AggSeconds })},
			{Name: "evaluation", Values: pick(rs, func(r Round) float64 { return r.EvalSeconds })},
		}},
	}
	var svgs []template.HTML
	for _, p := range plots {
		for _, ext := range []string{"png", "svg"} {
			if err := linePlot(filepath.Join(dir, p.file+"."+ext), p.title, p.y, p.series); err != nil {
				return err
			}
		}
		svg, err := os.ReadFile(filepath.Join(dir, p.file+".svg"))
		if err != nil {
			return err
		}
		svgs = append(svgs, template.HTML(svg)) // our own plot, written just now
	}
	var page bytes.Buffer
	if err := reportPage.Execute(&page, map[string]any{"O": o, "R": o.Report, "Plots": svgs}); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "report.html"), page.Bytes(), 0o644)
}

func pick(rs []Round, f func(Round) float64) []float64 {
	out := make([]float64, len(rs))
	for i, r := range rs {
		out[i] = f(r)
	}
	return out
}

func linePlot(path, title, ylabel string, series []Series) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "round"
	p.Y.Label.Text = ylabel
	p.Legend.Top = true
	for i, s := range series {
		pts := make(plotter.XYs, 0, len(s.Values))
		for r, v := range s.Values {
			pts = append(pts, plotter.XY{X: float64(r + 1), Y: v})
		}
		if len(pts) == 0 {
			continue
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return err
		}
		l.Color = plotutil.Color(i)
		l.Dashes = plotutil.Dashes(i / 7)
		l.Width = vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(s.Name, l)
	}
	return p.Save(16*vg.Centimeter, 9*vg.Centimeter, path)
}

func writeCSV(path string, rs []Round) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	_ = w.Write([]string{"round", "accuracy", "loss", "train_loss", "contributors", "aggregate_norm", "epsilon", "head_cid",
		"heads_agree", "bytes_received_per_peer", "train_seconds", "aggregate_seconds", "eval_seconds", "seconds"})
	ff := func(v float64) string {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return ""
		}
		return strconv.FormatFloat(v, 'g', 8, 64)
	}
	for _, r := range rs {
		_ = w.Write([]string{strconv.Itoa(r.Round), ff(r.Accuracy), ff(float64(r.Loss)), ff(float64(r.TrainLoss)), strconv.Itoa(r.Contributors),
			ff(float64(r.UpdateNorm)), ff(r.Epsilon), r.HeadCID, strconv.FormatBool(r.HeadsAgree), strconv.FormatInt(r.BytesPerPeer, 10),
			ff(r.TrainSeconds), ff(r.AggSeconds), ff(r.EvalSeconds), ff(r.Seconds)})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

var reportPage = template.Must(template.New("report").Funcs(template.FuncMap{
	"pct": func(v float64) string { return fmt.Sprintf("%.2f%%", 100*v) },
	"mb":  func(v uint64) float64 { return float64(v) / 1e6 },
}).Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>{{.O.Title}}</title>
<style>body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f4f4f4}code{font-size:90%}.plot svg{max-width:100%;height:auto}</style></head><body>
<h1>{{.O.Title}}</h1>
<p>{{.R.Peers}} peers ({{.R.Byzantine}} Byzantine: {{.R.Attack}}), aggregation {{.R.Aggregator}}, data {{.R.Partition}}, model {{.R.Model}}
({{.R.ModelParams}} parameters), seed {{.R.Seed}}.</p>
<table><tr><th>final accuracy</th><th>rounds committed</th><th>heads agree</th><th>bytes / peer / round</th><th>seconds</th></tr>
<tr><td>{{pct .R.FinalAccuracy}}</td><td>{{.R.RoundsCommitted}}</td><td>{{.R.HeadsAgree}}</td><td>{{.R.BytesPerPeerRound}}</td><td>{{printf "%.1f" .R.Seconds}}</td></tr></table>
{{if .R.HeapPerPeer}}<p>Go heap per peer at the end (stores included): {{printf "%.1f" (mb .R.HeapPerPeer)}} MB.</p>{{end}}
{{if .R.EquivocatingVotes}}<p>Equivocation: {{.R.EquivocatingVotes}} conflicting votes sent; honest peers recorded up to {{.R.Equivocations}} pieces of evidence.</p>{{end}}
{{if .R.SpamSent}}<p>Spam: {{.R.SpamSent}} invalid messages sent; honest validators rejected {{.R.SpamRejected}} (the rest were dropped unread once the spammers' gossip scores sank).</p>{{end}}
<p>Head: <code>{{.R.HeadCID}}</code> (<code>peer inspect head.car</code>)</p>
{{range $k, $v := .O.Extra}}<p><b>{{$k}}</b>: {{$v}}</p>{{end}}
{{range .Plots}}<div class="plot">{{.}}</div>{{end}}
{{if .O.Matrix}}<h2>Attack matrix</h2><table>{{range $i, $row := .O.Matrix}}<tr>{{range $row}}{{if eq $i 0}}<th>{{.}}</th>{{else}}<td>{{.}}</td>{{end}}{{end}}</tr>{{end}}</table>{{end}}
<h2>Rounds</h2><table><tr><th>round</th><th>accuracy</th><th>loss</th><th>updates</th><th>ε</th><th>KB / peer</th><th>seconds</th><th>head</th></tr>
{{range .R.Rounds}}<tr><td>{{.Round}}</td><td>{{pct .Accuracy}}</td><td>{{printf "%.4f" .Loss}}</td><td>{{.Contributors}}</td><td>{{printf "%.3f" .Epsilon}}</td><td>{{.BytesPerPeer}}</td><td>{{printf "%.2f" .Seconds}}</td><td><code>{{.HeadCID}}</code></td></tr>{{end}}</table>
<p>Files: rounds.csv, report.json, accuracy/bytes/round-time as .png and .svg, head.car.</p>
</body></html>
`))
