package predictor

import (
	"bytes"
	"image/png"
	"testing"
)

func TestPlots(t *testing.T) {
	t.Parallel()
	if raceDetector {
		t.Skip("encodes two PNGs, 6 s under the race detector (the plots share nothing across goroutines), which the package's 60 s cannot spare; make test runs it without")
	}
	tr := synthetic("phased", 60, 1)
	res := Evaluate(tr, synthPages, Contenders(synthPages, Options{}), EvalOptions{})
	for _, p := range []struct {
		name string
		draw func(*bytes.Buffer) error
	}{
		{"calibration", func(b *bytes.Buffer) error { return PlotCalibration(b, "phased", res) }},
		{"per-epoch", func(b *bytes.Buffer) error { return PlotEpochs(b, "phased", res) }},
	} {
		var b bytes.Buffer
		if err := p.draw(&b); err != nil {
			t.Fatalf("%s: %v", p.name, err)
		}
		img, err := png.Decode(&b)
		if err != nil {
			t.Fatalf("%s: not a PNG: %v", p.name, err)
		}
		if r := img.Bounds(); r.Dx() < 1000 || r.Dy() < 600 {
			t.Errorf("%s: %v, want a readable size", p.name, r)
		}
	}
	if err := PlotEpochs(&bytes.Buffer{}, "nothing", nil); err == nil {
		t.Error("PlotEpochs with no results: no error")
	}
}
