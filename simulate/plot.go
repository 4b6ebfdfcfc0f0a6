package simulate

import (
	"fmt"
	"image/color"
	"io"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// plotColors are matplotlib's ten, and plotDashes the strokes that tell a
// mode from the one ten before it: --mode all draws 13 (with seven
// colours, precopy and tsmc+mecom were both blue).
var (
	plotColors = []color.Color{
		color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
		color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
		color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
		color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff},
		color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
		color.RGBA{R: 0x8c, G: 0x56, B: 0x4b, A: 0xff},
		color.RGBA{R: 0xe3, G: 0x77, B: 0xc2, A: 0xff},
		color.RGBA{R: 0x7f, G: 0x7f, B: 0x7f, A: 0xff},
		color.RGBA{R: 0xbc, G: 0xbd, B: 0x22, A: 0xff},
		color.RGBA{R: 0x17, G: 0xbe, B: 0xcf, A: 0xff},
	}
	plotDashes = [][]vg.Length{nil, {vg.Points(6), vg.Points(3)}, {vg.Points(1.5), vg.Points(2.5)}}
)

// plotStyle is the colour and dashes of the i-th line.
func plotStyle(i int) (color.Color, []vg.Length) {
	return plotColors[i%len(plotColors)], plotDashes[i/len(plotColors)%len(plotDashes)]
}

// PlotTimeline draws, for every result, the bytes the destination still
// lacks and the bytes sent over the migration's (virtual) time, as a PNG.
func PlotTimeline(w io.Writer, title string, results []Result) error {
	remaining, sent := plot.New(), plot.New()
	remaining.Title.Text = title + ": pending (bytes the destination lacks)"
	sent.Title.Text = "bytes sent"
	// The axis's unit follows the largest value: a 1 TiB guest's bytes in
	// MiB had ticks of a million.
	div, unit := float64(1<<20), "MiB"
	var most uint64
	for _, r := range results {
		for _, pt := range r.Timeline {
			most = max(most, pt.Remaining, pt.Transferred)
		}
	}
	if most >= 1<<40 {
		div, unit = 1<<40, "TiB"
	} else if most >= 1<<30 {
		div, unit = 1<<30, "GiB"
	}
	for _, p := range []*plot.Plot{remaining, sent} {
		p.X.Label.Text = "time since the migration began (s)"
		p.Y.Label.Text = unit
		p.Legend.Top = true
		p.Add(plotter.NewGrid())
	}
	// Where the curves are not: pending falls from the top left, sent
	// rises to the top right.
	sent.Legend.Left = true
	for i, r := range results {
		if len(r.Timeline) == 0 {
			continue
		}
		rem, tx := make(plotter.XYs, len(r.Timeline)), make(plotter.XYs, len(r.Timeline))
		for j, pt := range r.Timeline {
			x := pt.At.Seconds()
			rem[j] = plotter.XY{X: x, Y: float64(pt.Remaining) / div}
			tx[j] = plotter.XY{X: x, Y: float64(pt.Transferred) / div}
		}
		for _, pl := range []struct {
			p   *plot.Plot
			xys plotter.XYs
		}{{remaining, rem}, {sent, tx}} {
			line, err := plotter.NewLine(pl.xys)
			if err != nil {
				return fmt.Errorf("plot %s: %w", r.Mode, err)
			}
			line.Color, line.Dashes = plotStyle(i)
			line.Width = vg.Points(1.5)
			pl.p.Add(line)
			pl.p.Legend.Add(r.Mode, line)
		}
	}
	const width, height = 9 * vg.Inch, 8 * vg.Inch
	img := vgimg.NewWith(vgimg.UseWH(width, height), vgimg.UseDPI(110))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadY: vg.Points(12), PadX: vg.Points(6), PadTop: vg.Points(6), PadBottom: vg.Points(6)}
	canvases := plot.Align([][]*plot.Plot{{remaining}, {sent}}, tiles, dc)
	remaining.Draw(canvases[0][0])
	sent.Draw(canvases[1][0])
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(w); err != nil {
		return fmt.Errorf("write timeline PNG: %w", err)
	}
	return nil
}
