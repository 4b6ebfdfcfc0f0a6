package predictor

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Plot colours: the model (first) stands out, baselines follow.
var plotColors = []color.Color{
	color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}, // red
	color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, // blue
	color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}, // green
	color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff}, // purple
	color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}, // orange
	color.RGBA{R: 0x8c, G: 0x56, B: 0x4b, A: 0xff}, // brown
}

func plotColor(i int) color.Color { return plotColors[i%len(plotColors)] }

const (
	plotDPI = 144
	// minEvents is the fewest dirty pairs, expected or observed, a bin
	// needs to be drawn on log axes.
	minEvents = 10
)

// decades marks powers of ten, labelled 1e-6 ... 1.
type decades struct{}

func (decades) Ticks(min, max float64) []plot.Tick {
	var ticks []plot.Tick
	min, max = math.Max(min, 1e-12), math.Max(max, 1e-12)
	for e := math.Floor(math.Log10(min)); e <= math.Ceil(math.Log10(max)); e++ {
		v := math.Pow(10, e)
		if v < min*(1-1e-9) || v > max*(1+1e-9) {
			continue
		}
		label := fmt.Sprintf("1e%d", int(e))
		switch e {
		case 0:
			label = "1"
		case -1:
			label = "0.1"
		case -2:
			label = "0.01"
		}
		ticks = append(ticks, plot.Tick{Value: v, Label: label})
		for k := 2.0; k < 10; k++ {
			if m := k * v; m <= max {
				ticks = append(ticks, plot.Tick{Value: m})
			}
		}
	}
	return ticks
}

// PlotCalibration draws reliability diagrams of results as a PNG to w:
// the observed frequency of dirtying against the mean predicted
// probability, one line per predictor, with the diagonal a calibrated
// forecast follows. The left panel has linear axes and the equal-width
// bins of Result.Calibration; the right one log axes and the octave bins
// of Result.CalibrationLog, where sparse traces keep nearly all their
// pairs; bins with fewer than 10 dirty pairs, expected or observed, are
// left out of it as too noisy (and bins never dirtied cannot be shown).
func PlotCalibration(w io.Writer, title string, results []Result) error {
	lin, log := plot.New(), plot.New()
	lin.Title.Text = "calibration: " + title
	log.Title.Text = "small probabilities (log axes)"
	for _, p := range []*plot.Plot{lin, log} {
		p.X.Label.Text = "mean predicted probability"
		p.Y.Label.Text = "observed frequency"
		p.Legend.Top, p.Legend.Left = false, false
		p.Legend.XOffs, p.Legend.YOffs = -vg.Points(4), vg.Points(4)
		p.Add(plotter.NewGrid())
	}
	lin.X.Min, lin.X.Max, lin.Y.Min, lin.Y.Max = 0, 1, 0, 1
	const logMin = 1e-6
	log.X.Scale, log.Y.Scale = plot.LogScale{}, plot.LogScale{}
	log.X.Tick.Marker, log.Y.Tick.Marker = decades{}, decades{}
	log.X.Min, log.X.Max, log.Y.Min, log.Y.Max = logMin, 1, logMin, 1

	for _, p := range []*plot.Plot{lin, log} {
		lo := 0.0
		if p == log {
			lo = logMin
		}
		diag, err := plotter.NewLine(plotter.XYs{{X: lo, Y: lo}, {X: 1, Y: 1}})
		if err != nil {
			return err
		}
		diag.Color = color.Gray{Y: 0x80}
		diag.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		p.Add(diag)
		p.Legend.Add("calibrated", diag)
	}
	for i, r := range results {
		for _, panel := range []struct {
			p    *plot.Plot
			bins []Bin
		}{{lin, r.Calibration}, {log, r.CalibrationLog}} {
			var xy plotter.XYs
			for _, b := range panel.bins {
				if panel.p == log && (b.Predicted < logMin || b.Observed < logMin ||
					float64(b.Count)*math.Max(b.Predicted, b.Observed) < minEvents) {
					continue
				}
				xy = append(xy, plotter.XY{X: b.Predicted, Y: b.Observed})
			}
			if len(xy) == 0 {
				continue
			}
			line, points, err := plotter.NewLinePoints(xy)
			if err != nil {
				return err
			}
			line.Color, line.Width = plotColor(i), vg.Points(1.5)
			points.Color, points.Shape, points.Radius = plotColor(i), draw.CircleGlyph{}, vg.Points(2.5)
			panel.p.Add(line, points)
			panel.p.Legend.Add(fmt.Sprintf("%s (ECE %.4f)", r.Name, r.ECE), line, points)
		}
	}
	return savePNG(w, 12*vg.Inch, 5.5*vg.Inch, lin, log)
}

// PlotEpochs draws, as a PNG to w, the number of pages dirtied in each
// scored epoch (within the horizon) against each predictor's forecast of
// it, the sum of its probabilities: the top panel over the whole trace,
// the bottom one the model's (the first result's) error, predicted minus
// actual.
func PlotEpochs(w io.Writer, title string, results []Result) error {
	if len(results) == 0 {
		return fmt.Errorf("no results to plot")
	}
	top, bottom := plot.New(), plot.New()
	top.Title.Text = "dirty pages per epoch: " + title
	top.X.Label.Text = "epoch"
	top.Y.Label.Text = "pages (log scale)"
	top.Y.Scale = floorLog{}
	top.Y.Tick.Marker = decades{}
	top.Legend.Top, top.Legend.Left = true, false
	top.Add(plotter.NewGrid())
	bottom.Title.Text = results[0].Name + ": predicted - actual"
	bottom.X.Label.Text = "epoch"
	bottom.Y.Label.Text = "pages"
	bottom.Add(plotter.NewGrid())

	actual := make(plotter.XYs, len(results[0].Epochs))
	for j, e := range results[0].Epochs {
		actual[j] = plotter.XY{X: float64(e.Index), Y: float64(e.Actual)}
	}
	line, err := plotter.NewLine(actual)
	if err != nil {
		return err
	}
	line.Color, line.Width = color.Black, vg.Points(2)
	top.Add(line)
	top.Legend.Add("actual", line)
	// Baselines first, so the model is drawn on top.
	for i := len(results) - 1; i >= 0; i-- {
		r := results[i]
		xy := make(plotter.XYs, len(r.Epochs))
		for j, e := range r.Epochs {
			xy[j] = plotter.XY{X: float64(e.Index), Y: e.Predicted}
		}
		l, err := plotter.NewLine(xy)
		if err != nil {
			return err
		}
		l.Color, l.Width = plotColor(i), vg.Points(1)
		if i == 0 {
			l.Width = vg.Points(1.5)
		}
		top.Add(l)
	}
	top.Y.Min = 1
	// Room above the lines for the legend, which was drawn over them:
	// its five rows take about the top fifth, a decade of a few.
	_, _, _, ymax := plotter.XYRange(actual)
	for _, r := range results {
		for _, e := range r.Epochs {
			ymax = max(ymax, e.Predicted)
		}
	}
	top.Y.Max = max(ymax, 1) * 10
	for i, r := range results {
		l, _ := plotter.NewLine(plotter.XYs{{}})
		l.Color, l.Width = plotColor(i), vg.Points(1.5)
		top.Legend.Add(r.Name, l)
	}

	diff := make(plotter.XYs, len(results[0].Epochs))
	var sum, sumAbs float64
	for j, e := range results[0].Epochs {
		d := e.Predicted - float64(e.Actual)
		diff[j] = plotter.XY{X: float64(e.Index), Y: d}
		sum += d
		sumAbs += math.Abs(d)
	}
	dl, err := plotter.NewLine(diff)
	if err != nil {
		return err
	}
	dl.Color, dl.Width = plotColor(0), vg.Points(1)
	zero, _ := plotter.NewLine(plotter.XYs{{X: diff[0].X, Y: 0}, {X: diff[len(diff)-1].X, Y: 0}})
	zero.Color = color.Gray{Y: 0x80}
	bottom.Add(zero, dl)
	if n := float64(len(diff)); n > 0 {
		bottom.Title.Text += fmt.Sprintf(" (mean %+.1f, mean absolute %.1f pages)", sum/n, sumAbs/n)
	}
	// Bursts would flatten everything else: show the 98% of epochs
	// with the smallest errors in full, clip the rest.
	abs := make([]float64, len(diff))
	for j, d := range diff {
		abs[j] = math.Abs(d.Y)
	}
	slices.Sort(abs)
	if lim := 1.2 * abs[len(abs)*98/100]; lim > 0 && lim < abs[len(abs)-1] {
		bottom.Y.Min, bottom.Y.Max = -lim, lim // NewLine copied the points: the axis does the clipping
		bottom.Title.Text += fmt.Sprintf("; clipped at ±%.0f", lim)
	}
	return saveColumn(w, 12*vg.Inch, 8*vg.Inch, []*plot.Plot{top, bottom}, []float64{2, 1})
}

// floorLog is a log scale that shows values below 1 at 1: epochs with
// no dirty pages and forecasts of less than a page.
type floorLog struct{}

func (floorLog) Normalize(min, max, x float64) float64 {
	return plot.LogScale{}.Normalize(math.Max(min, 1), math.Max(max, 1), math.Max(x, 1))
}

// savePNG draws plots side by side and writes the PNG to w.
func savePNG(w io.Writer, width, height vg.Length, plots ...*plot.Plot) error {
	img := vgimg.NewWith(vgimg.UseWH(width, height), vgimg.UseDPI(plotDPI))
	dc := draw.New(img)
	t := draw.Tiles{Rows: 1, Cols: len(plots), PadX: vg.Inch / 4, PadTop: vg.Inch / 8,
		PadBottom: vg.Inch / 8, PadLeft: vg.Inch / 8, PadRight: vg.Inch / 4}
	for i, p := range plots {
		p.Draw(t.At(dc, i, 0))
	}
	_, err := vgimg.PngCanvas{Canvas: img}.WriteTo(w)
	return err
}

// saveColumn draws plots one above the other, their heights in the given
// proportions, and writes the PNG to w.
func saveColumn(w io.Writer, width, height vg.Length, plots []*plot.Plot, shares []float64) error {
	img := vgimg.NewWith(vgimg.UseWH(width, height), vgimg.UseDPI(plotDPI))
	dc := draw.New(img)
	var total float64
	for _, s := range shares {
		total += s
	}
	pad := vg.Inch / 8
	top := dc.Max.Y - pad
	for i, p := range plots {
		h := vg.Length(shares[i]/total) * (dc.Max.Y - dc.Min.Y - pad*vg.Length(len(plots)+1))
		c := draw.Crop(dc, pad, -pad, 0, 0)
		c.Min.Y, c.Max.Y = top-h, top
		p.Draw(c)
		top -= h + pad
	}
	_, err := vgimg.PngCanvas{Canvas: img}.WriteTo(w)
	return err
}
