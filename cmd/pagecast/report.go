package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image/color"
	"io"
	"io/fs"
	"maps"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/urfave/cli/v2"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/palette"
	"gonum.org/v1/plot/palette/moreland"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/pagecast/pagecast/dashboards"
	"github.com/pagecast/pagecast/internal/printable"
)

func reportCommand() *cli.Command {
	return &cli.Command{
		Name:  "report",
		Usage: "render the Grafana dashboards' panels as PNG from a Prometheus, where there is no Grafana",
		Description: "Runs every query of every panel of pagecast's dashboards (dashboards/*.json) on a Prometheus as\n" +
			"range queries over --from..--to, as Grafana would: the datasource is --prometheus, each variable\n" +
			"takes its first value (All where it has one) unless --var sets it, $__rate_interval is the larger\n" +
			"of step + scrape interval and 4 scrape intervals. Each panel with data becomes DIR/DASHBOARD-PANEL.png\n" +
			"(lines; heatmaps and status timelines as coloured rows; tables as text, a row per series of the\n" +
			"columns the panel's organize transformation shows, its last value among them; stats as a line per\n" +
			"series with its last value; text too wide for the picture is made smaller, then cut with \"…\");\n" +
			"panels without data, or\n" +
			"with too little to draw (a heatmap of one time), or using a variable with no values over the\n" +
			"range, are listed.\n\n" +
			"Times are RFC 3339 (2026-11-30T05:00:00Z), now, or now-DURATION (now-15m).\n\n" +
			"Example: pagecast report --prometheus http://127.0.0.1:9090 --from now-15m --out report/",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "prometheus", Value: "http://127.0.0.1:9090", Usage: "the Prometheus that scrapes pagecast"},
			&cli.StringFlag{Name: "from", Value: "now-15m", Usage: "start of the range"},
			&cli.StringFlag{Name: "to", Value: "now", Usage: "end of the range"},
			&cli.DurationFlag{Name: "step", Usage: "resolution of the range queries; 0: the range / 300, at least 1s"},
			&cli.DurationFlag{Name: "scrape-interval", Value: 15 * time.Second, DefaultText: "the Prometheus's global scrape_interval, else 15s", Usage: "the scrape interval of the Prometheus, for $__rate_interval"},
			&cli.StringSliceFlag{Name: "var", Usage: "NAME=VALUE: a dashboard variable's value, e.g. vm=awk; for a multi-value variable a regex (vm=web.*), unless it is one of the variable's values exactly, which is then taken as it is (vm=web(1)+x)"},
			&cli.StringSliceFlag{Name: "dashboard", Usage: "only this dashboard (file name without .json, e.g. migrations); repeatable"},
			&cli.StringFlag{Name: "out", Aliases: []string{"o"}, Required: true, Usage: "folder to write the PNGs into (created)"},
		},
		Action: runReport,
	}
}

// parseReportTime reads RFC 3339, now or now-DURATION.
func parseReportTime(s string, now time.Time) (time.Time, error) {
	if s == "now" {
		return now, nil
	}
	if d, ok := strings.CutPrefix(s, "now-"); ok {
		dur, err := time.ParseDuration(d)
		if err != nil || dur < 0 {
			return time.Time{}, fmt.Errorf("time %q: want now-DURATION such as now-15m", s)
		}
		return now.Add(-dur), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("time %q: want RFC 3339 (2026-11-30T05:00:00Z), now or now-15m", s)
	}
	return t, nil
}

// checkPrometheus says, before any work, whether base is a Prometheus
// that answers: its API's build information.
func checkPrometheus(ctx context.Context, base string) error {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--prometheus %q: want a URL such as http://127.0.0.1:9090", base)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+"/api/v1/status/buildinfo", nil)
	if err != nil {
		return fmt.Errorf("--prometheus %q: %w", base, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach Prometheus at %s: %w (is it running there? --prometheus)", base, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s does not answer as Prometheus (%s from /api/v1/status/buildinfo): give its base URL, such as http://127.0.0.1:9090", base, resp.Status)
	}
	return nil
}

// promScrapeInterval is the global scrape interval of the Prometheus at
// base, from its configuration (/api/v1/status/config), as Grafana takes
// $__rate_interval's from its data source; false where it does not say.
func promScrapeInterval(ctx context.Context, base string) (time.Duration, bool) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+"/api/v1/status/config", nil)
	if err != nil {
		return 0, false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	var reply struct {
		Data struct {
			YAML string `json:"yaml"`
		} `json:"data"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&reply) != nil {
		return 0, false
	}
	m := globalScrape.FindStringSubmatch(reply.Data.YAML)
	if m == nil {
		return 0, false
	}
	d, err := model.ParseDuration(m[1])
	if err != nil || d <= 0 {
		return 0, false
	}
	return time.Duration(d), true
}

// globalScrape is the global section's scrape_interval in the YAML of a
// Prometheus's configuration (its first lines: global comes first).
var globalScrape = regexp.MustCompile(`(?m)\Aglobal:\n(?:[ \t]+.*\n)*?[ \t]+scrape_interval:[ \t]*(\S+)`)

func runReport(c *cli.Context) (err error) {
	now := time.Now()
	from, err := parseReportTime(c.String("from"), now)
	if err != nil {
		return fmt.Errorf("--from: %w", err)
	}
	to, err := parseReportTime(c.String("to"), now)
	if err != nil {
		return fmt.Errorf("--to: %w", err)
	}
	if !to.After(from) {
		return fmt.Errorf("--from %s is not before --to %s", from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	step := c.Duration("step")
	if step < 0 {
		return fmt.Errorf("--step %v: want a positive resolution, or 0 for the range / 300", step)
	}
	if step == 0 {
		step = max(time.Second, to.Sub(from)/300).Round(time.Second)
	}
	// Prometheus returns at most 11 000 points a series.
	if n := to.Sub(from) / step; n > 11000 {
		least := (to.Sub(from) + 10999*time.Millisecond) / 11000
		return fmt.Errorf("--step %v: %d points a series from --from to --to, more than the 11 000 Prometheus returns: want --step %v or more", step, n, least.Round(time.Millisecond))
	}
	if d := c.Duration("scrape-interval"); d <= 0 {
		return fmt.Errorf("--scrape-interval %v: want the Prometheus's scrape interval, e.g. 15s", d)
	}
	set := map[string]string{}
	for _, kv := range c.StringSlice("var") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return fmt.Errorf("--var %q: want NAME=VALUE", kv)
		}
		set[k] = v
	}
	ds, err := dashboards.Committed()
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for _, d := range ds {
		for _, v := range d.Templating.List {
			if v.Type == "query" {
				known[v.Name] = true
			}
		}
	}
	for k := range set {
		if !known[k] {
			return fmt.Errorf("--var %s: the dashboards have no such variable; they have %s", k, strings.Join(slices.Sorted(maps.Keys(known)), ", "))
		}
	}
	if only := slices.Compact(slices.Sorted(slices.Values(c.StringSlice("dashboard")))); len(only) > 0 { // each once
		var keep []dashboards.Dashboard
		for _, d := range ds {
			for _, o := range only {
				if strings.TrimSuffix(d.File, ".json") == o {
					keep = append(keep, d)
				}
			}
		}
		if len(keep) != len(only) {
			return fmt.Errorf("--dashboard %v: the dashboards are %s", only, dashboardNames(ds))
		}
		ds = keep
	}
	if err := checkPrometheus(c.Context, c.String("prometheus")); err != nil {
		return err
	}
	scrape := c.Duration("scrape-interval")
	if !c.IsSet("scrape-interval") {
		if d, ok := promScrapeInterval(c.Context, c.String("prometheus")); ok {
			scrape = d
		}
	}
	src, err := dashboards.NewSource(c.String("prometheus"), from, to, step, scrape)
	if err != nil {
		return err
	}
	out := c.String("out")
	if _, err := os.Stat(out); errors.Is(err, fs.ErrNotExist) {
		// Made here, it goes again if the report fails before a panel is
		// written into it.
		defer func() {
			if err != nil {
				os.Remove(out) // only if still empty
			}
		}()
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	ctx := c.Context
	written, empty, undrawn := 0, 0, 0
	for _, d := range ds {
		vars, values, err := src.Variables(ctx, d, set)
		if err != nil && !errors.Is(err, dashboards.ErrNoValues) {
			return err
		}
		var none []string // variables without values: the panels using them have no data
		for _, v := range d.Templating.List {
			val, ok := vars[v.Name]
			if v.Type == "query" && !ok {
				none = append(none, v.Name)
			}
			if _, given := set[v.Name]; ok && v.Type == "query" && !v.Multi && !given {
				// One value of several drawn, and which was not said
				// (walk 95).
				if vals := values[v.Name]; len(vals) > 1 {
					// The values are Prometheus's labels, anyone's text
					// (walk 122): escaped.
					fmt.Fprintf(c.App.Writer, "%s: %s=%s, one of %d (%s); --var %s=NAME draws another\n",
						d.Title, v.Name, printable.Line(val), len(vals), printable.Line(strings.Join(vals, ", ")), v.Name)
				}
			}
		}
		if err != nil {
			// The rest are drawn: the dirtying dashboard's profiler
			// panels, fed by profile --metrics (instance), were skipped
			// with the rest for want of a predict serve's vm (found by
			// a new-user walk).
			fmt.Fprintf(c.App.ErrWriter, "pagecast: warning: %s: %s; its panels that use them have no data\n", d.Title, strings.ReplaceAll(err.Error(), "\n", "; "))
		}
		for _, p := range d.Panels {
			if p.Type == "row" {
				continue
			}
			// The queries of variables without values have no data; the
			// others are drawn (walk 96: "Hook in use", profile's and
			// predict serve's, was skipped whole without a profile).
			if i := slices.IndexFunc(none, p.Uses); i >= 0 {
				p.Targets = slices.DeleteFunc(slices.Clone(p.Targets), func(t dashboards.Target) bool {
					return slices.ContainsFunc(none, func(v string) bool { return dashboards.ExprUses(t.Expr, v) })
				})
				if len(p.Targets) == 0 {
					fmt.Fprintf(c.App.Writer, "%s / %s: no data: variable %s has no values\n", d.Title, p.Title, none[i])
					empty++
					continue
				}
			}
			series, err := panelSeries(ctx, src, p, vars)
			if err != nil {
				return fmt.Errorf("dashboard %q panel %q: %w", d.Title, p.Title, err)
			}
			if len(series) == 0 {
				fmt.Fprintf(c.App.Writer, "%s / %s: no data\n", d.Title, p.Title)
				empty++
				continue
			}
			name := filepath.Join(out, strings.TrimSuffix(d.File, ".json")+"-"+slug(p.Title)+".png")
			err = renderPanel(name, p, series, from, to)
			if errors.Is(err, errTooLittleToDraw) {
				fmt.Fprintf(c.App.Writer, "%s / %s: no data: %v\n", d.Title, p.Title, err)
				empty++
				continue
			}
			if errors.Is(err, errUndrawable) {
				// It has data, which no axis holds: said apart from
				// "no data" (walk 153: counted without data, and the
				// end asked whether Prometheus scraped pagecast).
				fmt.Fprintf(c.App.Writer, "%s / %s: not drawn: %v\n", d.Title, p.Title, err)
				undrawn++
				continue
			}
			if err != nil {
				return fmt.Errorf("dashboard %q panel %q: %w", d.Title, p.Title, err)
			}
			fmt.Fprintf(c.App.Writer, "%s / %s: %d series -> %s\n", d.Title, p.Title, len(series), name)
			written++
		}
	}
	drawn := ""
	if undrawn > 0 {
		drawn = fmt.Sprintf(", %d with data no axis holds", undrawn)
	}
	fmt.Fprintf(c.App.Writer, "%d panels rendered, %d without data%s, from %s to %s, step %s, scrape interval %s\n", written, empty, drawn,
		from.Format(time.RFC3339), to.Format(time.RFC3339), step, scrape)
	if written == 0 && undrawn > 0 {
		return fmt.Errorf("no panel could be drawn: %d had data no axis holds, %d none", undrawn, empty)
	}
	if written == 0 {
		return errors.New("no panel had data: is Prometheus scraping pagecast, and is the range right?")
	}
	return nil
}

func dashboardNames(ds []dashboards.Dashboard) string {
	var n []string
	for _, d := range ds {
		n = append(n, strings.TrimSuffix(d.File, ".json"))
	}
	return strings.Join(n, ", ")
}

// namedSeries is a series with its legend.
type namedSeries struct {
	name string
	dashboards.Series
}

// panelSeries runs a panel's queries and names their series.
func panelSeries(ctx context.Context, src *dashboards.Source, p dashboards.Panel, vars map[string]string) ([]namedSeries, error) {
	var out []namedSeries
	for _, t := range p.Targets {
		ss, err := src.Range(ctx, src.Expand(t.Expr, vars))
		if err != nil {
			return nil, err
		}
		for _, s := range ss {
			out = append(out, namedSeries{dashboards.Legend(t.LegendFormat, s.Labels), s})
		}
	}
	if p.Type == "heatmap" {
		sort.SliceStable(out, func(i, j int) bool { return out[i].name < out[j].name })
	}
	if p.Type == "table" {
		// Grafana asks a table's query once, at the range's end: the
		// series there, not every one some step had (walk 95: mode
		// auto's migration in two rows, auto and the mode it chose).
		var last time.Time
		for _, s := range out {
			if t := s.Times[len(s.Times)-1]; t.After(last) {
				last = t
			}
		}
		out = slices.DeleteFunc(out, func(s namedSeries) bool { return s.Times[len(s.Times)-1].Before(last) })
	}
	return out, nil
}

var nonWord = regexp.MustCompile(`[^a-z0-9]+`)

func slug(title string) string {
	return strings.Trim(nonWord.ReplaceAllString(strings.ToLower(title), "-"), "-")
}

// axisScale picks a divisor and a label for a panel's unit and the largest
// value it shows.
func axisScale(unit string, maxValue float64) (div float64, label string) {
	binary := func(suffix string) (float64, string) {
		for _, u := range []struct {
			div  float64
			name string
		}{{1 << 30, "GiB"}, {1 << 20, "MiB"}, {1 << 10, "KiB"}} {
			if maxValue >= u.div {
				return u.div, u.name + suffix
			}
		}
		return 1, "bytes" + suffix
	}
	decimal := func(suffix string) (float64, string) {
		for _, u := range []struct {
			div  float64
			name string
		}{{1e9, "G"}, {1e6, "M"}, {1e3, "k"}} {
			if maxValue >= u.div {
				return u.div, strings.TrimSpace(u.name + " " + suffix)
			}
		}
		return 1, suffix
	}
	switch unit {
	case "bytes":
		return binary("")
	case "binBps":
		return binary("/s")
	case "s":
		switch {
		case maxValue >= 1:
			return 1, "seconds"
		case maxValue >= 1e-3:
			return 1e-3, "ms"
		case maxValue >= 1e-6:
			return 1e-6, "µs"
		default:
			return 1e-9, "ns"
		}
	case "percentunit":
		return 0.01, "%"
	case "wps":
		return decimal("writes/s")
	case "none":
		return 1, ""
	default:
		// A count: the multiple in words, for there is no unit to put it before.
		for _, u := range []struct {
			div  float64
			name string
		}{{1e9, "billions"}, {1e6, "millions"}, {1e3, "thousands"}} {
			if maxValue >= u.div {
				return u.div, u.name
			}
		}
		return 1, ""
	}
}

var reportColors = []color.Color{
	color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}, color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff}, color.RGBA{R: 0x8c, G: 0x56, B: 0x4b, A: 0xff},
}

// reportDashes are the line styles a panel's lines take in turn, each
// through every colour: solid, dashed, dotted.
var reportDashes = [][]vg.Length{nil, {vg.Points(6), vg.Points(3)}, {vg.Points(1.5), vg.Points(2.5)}}

// errTooLittleToDraw says a panel has data, but too little to draw: a
// heatmap of one time. report lists such a panel as without data.
var errTooLittleToDraw = errors.New("too little to draw")

// errUndrawable says a panel's values lie beyond what an axis can span:
// near 1e308, the axis's ticks were sought for good at full CPU (found by
// a hostile-input walk). No pagecast metric comes near maxDrawable.
var errUndrawable = errors.New("cannot be drawn")

const maxDrawable = 1e300

// plainTicks are gonum's default ticks, their labels without trailing
// zeros: "500", not "500.00" (walk 95).
type plainTicks struct{}

func (plainTicks) Ticks(min, max float64) []plot.Tick {
	ts := plot.DefaultTicks{}.Ticks(min, max)
	for i, t := range ts {
		if strings.Contains(t.Label, ".") && !strings.ContainsAny(t.Label, "eE") {
			ts[i].Label = strings.TrimSuffix(strings.TrimRight(t.Label, "0"), ".")
		}
	}
	return ts
}

// timeTicks are a panel's time axis ticks in loc, the zone its label names
// (without one, gonum's are UTC: the axis said CET and its ticks were an
// hour behind; found by a review walk).
func timeTicks(loc *time.Location) plot.TimeTicks {
	return plot.TimeTicks{Format: "15:04:05", Time: plot.UnixTimeIn(loc)}
}

// renderPanel draws a panel's series into a PNG at name; it writes nothing
// when it returns errTooLittleToDraw.
func renderPanel(name string, p dashboards.Panel, series []namedSeries, from, to time.Time) error {
	pl := plot.New()
	pl.Title.Text = p.Title
	pl.X.Tick.Marker = timeTicks(from.Location())
	pl.X.Min, pl.X.Max = unixSeconds(from), unixSeconds(to)
	pl.X.Label.Text = "time (" + from.Format("2006-01-02 MST") + ")"
	maxValue := 0.0
	for _, s := range series {
		for _, v := range s.Values {
			maxValue = math.Max(maxValue, math.Abs(v))
		}
	}
	if maxValue > maxDrawable {
		return fmt.Errorf("%w: values up to %g, too large for an axis", errUndrawable, maxValue)
	}
	div, label := axisScale(p.Unit(), maxValue)
	height := 3 * vg.Inch // taller for a table of many rows
	switch {
	case p.Type == "heatmap":
		// Grafana's colours for the panel (scheme Oranges), and its
		// filter: cells of 1e-9 or less left blank (review 105).
		if err := addHeatmap(pl, series, div, oranges(64), 1e-9); err != nil {
			return err
		}
		pl.Y.Label.Text = "region (guest-physical address)"
		pl.Title.Text += " (pale: few, dark orange: many)"
	case p.Type == "table" || p.Type == "stat":
		// A stat panel shows each series' last value, as a table's
		// row does: drawn as lines, "Hook in use" was a flat 1, one
		// VM's hidden under another's (walk 95).
		t, err := newTextTable(p, series, div, label)
		if err != nil {
			return err
		}
		pl.HideAxes()
		pl.X.Min, pl.X.Max, pl.Y.Min, pl.Y.Max = 0, 1, 0, 1
		pl.X.Label.Text = "" // no time axis (walk 95)
		pl.Add(t)
		height = max(height, t.height())
	case p.Type == "state-timeline" && len(series) > 1:
		// A row per state, coloured while the series is present.
		pal := moreland.SmoothBlueRed()
		pal.SetMin(0)
		pal.SetMax(1)
		if err := addHeatmap(pl, series, 1, pal.Palette(64), math.Inf(-1)); err != nil {
			return err
		}
		pl.Title.Text += " (red while in that state)"
	default:
		pl.Y.Label.Text = label
		pl.Y.Tick.Marker = plainTicks{}
		pl.Y.Min = math.Min(0, pl.Y.Min)
		pl.Legend.Top, pl.Legend.Left = true, true
		pl.Legend.TextStyle.Font.Size = vg.Points(8)
		series = legendFirst(series)
		step := sampleStep(series)
		for i, s := range series {
			xy := make(plotter.XYs, len(s.Values))
			for k := range s.Values {
				xy[k] = plotter.XY{X: unixSeconds(s.Times[k]), Y: s.Values[k] / div}
			}
			// A line per run of samples: where the series is absent (no
			// profile ran), none is drawn (walk 52: "configured" sloped
			// from 0.5 s to 0.1 s over four minutes without a sample).
			runs := splitRuns(xy, step)
			line, err := plotter.NewLine(runs[0])
			if err != nil {
				return err
			}
			// Past the colours, the same colours dashed: the 8 in the
			// legend told apart; the rest thin and grey, so that none
			// is taken for one in the legend (a failed migration, 10th
			// of 10, was drawn as the 4th's orange, dashed; found by a
			// new-user walk).
			line.Color = reportColors[i%len(reportColors)]
			line.Dashes = reportDashes[(i/len(reportColors))%len(reportDashes)]
			line.Width = vg.Points(1.5)
			if i >= 8 {
				line.Color, line.Dashes, line.Width = color.Gray{Y: 0xa0}, nil, vg.Points(0.75)
			}
			for _, run := range runs {
				l := *line
				l.XYs = run
				pl.Add(&l)
				if len(run) < 3 { // too short a line to see: mark its points
					points, err := plotter.NewScatter(run)
					if err != nil {
						return err
					}
					points.Color = line.Color
					points.Shape = draw.CircleGlyph{}
					points.Radius = vg.Points(3)
					pl.Add(points)
				}
			}
			if i < 8 {
				pl.Legend.Add(s.name, line)
			}
		}
		if len(series) > 8 {
			pl.Title.Text += fmt.Sprintf(" (%d series: the 8 highest in the legend, the rest grey)", len(series))
		}
		// Room above the lines for the legend.
		pl.Y.Max = maxValue / div * (1 + 0.12*float64(min(len(series), 8)))
	}
	img := vgimg.NewWith(vgimg.UseWH(pictureWidth, height), vgimg.UseDPI(96))
	pl.Draw(draw.New(img))
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// legendFirst orders a line panel's series for its legend of 8, where it
// has more: the highest first (a failure's 1 before successes' 0), ties
// as they came.
func legendFirst(series []namedSeries) []namedSeries {
	if len(series) <= 8 {
		return series
	}
	peak := func(s namedSeries) float64 { return slices.Max(s.Values) }
	out := slices.Clone(series)
	slices.SortStableFunc(out, func(a, b namedSeries) int { return cmp.Compare(peak(b), peak(a)) })
	return out
}

// pictureWidth is the width of report's pictures.
const pictureWidth = 8 * vg.Inch

// textTable is a table panel drawn as text, as Grafana's table shows it:
// a row per series, its columns under a header; or a stat panel's lines,
// a series' name and its latest value each. It fits the picture's width:
// its font shrinks down to minTableFont, then cells still too wide are
// cut in the middle with an ellipsis. (Drawn as gonum's Labels, a table
// with a line wider than the picture came out blank, and was counted as
// drawn: the plot's padding for the labels divided by zero, every label
// then fell outside the canvas; walk 129.)
type textTable struct {
	header []string   // nil: none
	rows   [][]string // at most maxTableRows, the last saying how many more there were
}

const (
	tableFont    = vg.Length(9)
	minTableFont = vg.Length(6.5)
	tableLeading = 1.6 // a line's height, in font sizes
	maxTableRows = 50
)

// newTextTable is the table of a table or stat panel's series: for a
// table, the columns the panel's organize transformation shows (Grafana's
// excludeByName, indexByName and renameByName), Value in the panel's unit
// (div, label: axisScale's); for a stat, a line per series.
func newTextTable(p dashboards.Panel, series []namedSeries, div float64, label string) (textTable, error) {
	var t textTable
	if p.Type != "table" {
		for _, s := range series {
			if p.Options.TextMode == "name" { // a stat of an info metric, whose value is 1: as Grafana shows it
				t.rows = append(t.rows, []string{s.name})
				continue
			}
			t.rows = append(t.rows, []string{tableLine(s, div, label)})
		}
	} else {
		// The table's fields, as Grafana's table format has them: each
		// label, then Value (Time is not drawn, __name__ never shown).
		seen := map[string]bool{}
		var fields []string
		for _, s := range series {
			for k := range s.Labels {
				if !seen[k] && k != "__name__" {
					seen[k] = true
					fields = append(fields, k)
				}
			}
		}
		slices.Sort(fields)
		names, headers := p.Columns(append(fields, "Value"))
		if len(names) == 0 {
			return t, fmt.Errorf("%w: its organize transformation leaves no column to show", errTooLittleToDraw)
		}
		t.header = headers
		for _, s := range series {
			row := make([]string, len(names))
			for i, n := range names {
				if n == "Value" {
					row[i] = valueText(s.Values[len(s.Values)-1], div, label)
				} else {
					row[i] = s.Labels[n]
				}
			}
			t.rows = append(t.rows, row)
		}
	}
	if len(t.rows) > maxTableRows {
		more := len(t.rows) - (maxTableRows - 1)
		t.rows = append(t.rows[:maxTableRows-1], []string{fmt.Sprintf("… and %d more rows", more)})
	}
	return t, nil
}

// height is how tall a picture must be to hold the table at its largest
// font: the title and a line each.
func (t textTable) height() vg.Length {
	lines := len(t.rows)
	if t.header != nil {
		lines++
	}
	return vg.Length(40) + vg.Length(lines)*tableFont*tableLeading
}

func tableStyle(size vg.Length) text.Style {
	return text.Style{Font: font.From(plot.DefaultFont, size), Handler: plot.DefaultTextHandler, YAlign: draw.YTop}
}

// columnWidths is how wide each column of lines is in sty, and the width
// of a line with tableGap between its columns.
func columnWidths(sty text.Style, lines [][]string) (widths []vg.Length, total vg.Length) {
	for _, line := range lines {
		for k, cell := range line {
			if k == len(widths) {
				widths = append(widths, 0)
			}
			widths[k] = max(widths[k], sty.Width(cell))
		}
	}
	for k, w := range widths {
		total += w
		if k > 0 {
			total += tableGap(sty)
		}
	}
	return widths, total
}

func tableGap(sty text.Style) vg.Length { return 2 * sty.Font.Size }

// fit is the font size and the lines (the header first) that fit width:
// the largest size from tableFont down to minTableFont that fits, else
// minTableFont with the widest column's cells cut until the lines fit.
func (t textTable) fit(width vg.Length) (vg.Length, [][]string) {
	var lines [][]string
	if t.header != nil {
		lines = append(lines, slices.Clone(t.header))
	}
	for _, r := range t.rows {
		lines = append(lines, slices.Clone(r))
	}
	for size := tableFont; size >= minTableFont; size -= 0.5 {
		if _, total := columnWidths(tableStyle(size), lines); total <= width {
			return size, lines
		}
	}
	sty := tableStyle(minTableFont)
	least := sty.Width("abcd…yz") // no cell is cut shorter
	for {
		widths, total := columnWidths(sty, lines)
		if total <= width {
			break
		}
		k := 0
		for i, w := range widths {
			if w > widths[k] {
				k = i
			}
		}
		limit := max(widths[k]-(total-width), least)
		if limit >= widths[k] {
			break // as narrow as they go: the rest runs off the picture
		}
		for _, line := range lines {
			if k < len(line) {
				line[k] = cutMiddle(sty, line[k], limit)
			}
		}
	}
	return minTableFont, lines
}

// cutMiddle is s, cut in the middle with an ellipsis where it is wider
// than width in sty: both its ends stay (a label's start, a line's value).
func cutMiddle(sty text.Style, s string, width vg.Length) string {
	if sty.Width(s) <= width {
		return s
	}
	r := []rune(s)
	for n := len(r) - 1; n > 0; n-- {
		head := (n + 1) / 2
		cut := string(r[:head]) + "…" + string(r[len(r)-(n-head):])
		if sty.Width(cut) <= width {
			return cut
		}
	}
	return "…"
}

// Plot draws the table from the top of c, fitted to its width.
func (t textTable) Plot(c draw.Canvas, _ *plot.Plot) {
	size, lines := t.fit(c.Max.X - c.Min.X)
	sty := tableStyle(size)
	widths, total := columnWidths(sty, lines)
	y := c.Max.Y - size/2 // clear of the title
	for i, line := range lines {
		x := c.Min.X
		for k, cell := range line {
			c.FillText(sty, vg.Point{X: x, Y: y}, cell)
			x += widths[k] + tableGap(sty)
		}
		y -= size * tableLeading
		if i == 0 && t.header != nil { // a rule under the header
			rule := y + size*tableLeading/4
			c.StrokeLine2(draw.LineStyle{Color: color.Gray{Y: 0x80}, Width: vg.Points(0.5)}, c.Min.X, rule, c.Min.X+total, rule)
		}
	}
}

// tableLine is a stat panel's line for series s: its name, and its latest
// value in the panel's unit.
func tableLine(s namedSeries, div float64, label string) string {
	return strings.TrimSpace(s.name + " = " + valueText(s.Values[len(s.Values)-1], div, label))
}

// valueText is v in a panel's unit (div, label: axisScale's).
func valueText(v, div float64, label string) string {
	return strings.TrimSpace(fmt.Sprintf("%.4g %s", v/div, label))
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// sampleStep is the shortest time between two samples of any series, in
// seconds: the query's step, where samples come from a range query (0
// where no series has two).
func sampleStep(series []namedSeries) float64 {
	step := 0.0
	for _, s := range series {
		for k := 1; k < len(s.Times); k++ {
			if d := unixSeconds(s.Times[k]) - unixSeconds(s.Times[k-1]); d > 0 && (step == 0 || d < step) {
				step = d
			}
		}
	}
	return step
}

// splitRuns cuts xy where two samples lie more than 1.5 steps apart: a
// run of samples each, the last always there.
func splitRuns(xy plotter.XYs, step float64) []plotter.XYs {
	if step <= 0 || len(xy) == 0 {
		return []plotter.XYs{xy}
	}
	var runs []plotter.XYs
	from := 0
	for k := 1; k < len(xy); k++ {
		if xy[k].X-xy[k-1].X > 1.5*step {
			runs = append(runs, xy[from:k])
			from = k
		}
	}
	return append(runs, xy[from:])
}

// heatGrid is series on a common time axis: a column per time, a row per
// series.
type heatGrid struct {
	times []float64
	z     [][]float64 // [row][column], NaN where a series has no sample
}

func (g heatGrid) Dims() (c, r int)   { return len(g.times), len(g.z) }
func (g heatGrid) Z(c, r int) float64 { return g.z[r][c] }
func (g heatGrid) X(c int) float64    { return g.times[c] }
func (g heatGrid) Y(r int) float64    { return float64(r) }

// maxHeatColumns bounds a heatmap's columns on the samples' grid.
const maxHeatColumns = 20000

// addHeatmap draws series as rows of a heatmap, labelled with their names,
// in pal's colours from the lowest value to the highest, leaving blank the
// cells whose value is blankAt or less.
func addHeatmap(pl *plot.Plot, series []namedSeries, div float64, pal palette.Palette, blankAt float64) error {
	g, lo, hi, ticks, err := newHeatGrid(series, div)
	if err != nil {
		return err
	}
	for _, row := range g.z {
		for c, v := range row {
			if v*div <= blankAt {
				row[c] = math.NaN()
			}
		}
	}
	if hi <= lo {
		lo = hi - 1 // one value (a state timeline's 1): drawn as the most
	}
	h := plotter.NewHeatMap(g, pal)
	h.Min, h.Max = lo, hi
	h.NaN = color.Transparent
	pl.Add(h)
	pl.Y.Tick.Marker = plot.ConstantTicks(ticks)
	pl.Y.Tick.Label.Font.Size = vg.Points(7)
	return nil
}

// orangeStops are the colours of Grafana's heatmap scheme Oranges (d3's,
// from ColorBrewer's nine-class Oranges), lightest first.
var orangeStops = []color.RGBA{
	{0xff, 0xf5, 0xeb, 0xff}, {0xfe, 0xe6, 0xce, 0xff}, {0xfd, 0xd0, 0xa2, 0xff},
	{0xfd, 0xae, 0x6b, 0xff}, {0xfd, 0x8d, 0x3c, 0xff}, {0xf1, 0x69, 0x13, 0xff},
	{0xd9, 0x48, 0x01, 0xff}, {0xa6, 0x36, 0x03, 0xff}, {0x7f, 0x27, 0x04, 0xff},
}

// orangePalette is n colours from orangeStops' first to its last.
type orangePalette []color.Color

func (o orangePalette) Colors() []color.Color { return o }

// oranges is Grafana's Oranges in n steps (n ≥ 2), lightest first.
func oranges(n int) palette.Palette {
	out := make(orangePalette, n)
	for i := range out {
		x := float64(i) / float64(n-1) * float64(len(orangeStops)-1)
		k := min(int(x), len(orangeStops)-2)
		f := x - float64(k)
		a, b := orangeStops[k], orangeStops[k+1]
		mix := func(u, v uint8) uint8 { return uint8(math.Round(float64(u) + f*(float64(v)-float64(u)))) }
		out[i] = color.RGBA{mix(a.R, b.R), mix(a.G, b.G), mix(a.B, b.B), 0xff}
	}
	return out
}

// newHeatGrid puts series (values divided by div) on one time axis, a row
// each, with the lowest and highest value and a tick naming every few
// rows.
func newHeatGrid(series []namedSeries, div float64) (g heatGrid, lo, hi float64, ticks []plot.Tick, err error) {
	at := map[float64]int{}
	var times []float64
	for _, s := range series {
		for _, t := range s.Times {
			x := unixSeconds(t)
			if _, ok := at[x]; !ok {
				at[x] = 0
				times = append(times, x)
			}
		}
	}
	sort.Float64s(times)
	if len(times) < 2 || len(series) < 2 {
		return g, 0, 0, nil, fmt.Errorf("%w: a heatmap needs two series and two times, have %d and %d", errTooLittleToDraw, len(series), len(times))
	}
	// A column every step from the first sample to the last, empty where
	// no series has one: on the samples' times alone, a cell stretched
	// halfway to the next time any series had, and a state held for 2
	// samples was drawn for 40 s (walk 52).
	gridded := false
	if step := sampleStep(series); step > 0 {
		if n := (times[len(times)-1]-times[0])/step + 1; n <= maxHeatColumns {
			gridded = true
			grid := make([]float64, int(math.Round(n)))
			for c := range grid {
				grid[c] = times[0] + float64(c)*step
			}
			for _, x := range times {
				at[x] = min(len(grid)-1, int(math.Round((x-times[0])/step)))
			}
			times = grid
		}
	}
	if !gridded { // a column per time
		for i, x := range times {
			at[x] = i
		}
	}
	g = heatGrid{times: times, z: make([][]float64, len(series))}
	lo, hi = math.Inf(1), math.Inf(-1)
	for r, s := range series {
		g.z[r] = make([]float64, len(times))
		for c := range g.z[r] {
			g.z[r][c] = math.NaN()
		}
		for k, t := range s.Times {
			v := s.Values[k] / div
			g.z[r][at[unixSeconds(t)]] = v
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
		if r%max(1, len(series)/8) == 0 {
			ticks = append(ticks, plot.Tick{Value: float64(r), Label: s.name})
		}
	}
	return g, lo, hi, ticks, nil
}
