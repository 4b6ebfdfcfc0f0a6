package predictor

import (
	"math"

	"gonum.org/v1/gonum/mat"
)

// samples are training rows for a logistic regression: features, a 0/1
// outcome and a weight (the inverse of the row's sampling rate, so a
// subsample stands for the whole).
type samples struct {
	d int       // features a row, the intercept included as feature 0
	x []float32 // rows × d
	y []float64
	c []float64
}

func (s *samples) len() int { return len(s.y) }

func (s *samples) add(x []float32, y bool, c float64) {
	s.x = append(s.x, x...)
	v := 0.0
	if y {
		v = 1
	}
	s.y = append(s.y, v)
	s.c = append(s.c, c)
}

func (s *samples) reset() {
	s.x, s.y, s.c = s.x[:0], s.y[:0], s.c[:0]
}

// fitLogistic fits the weights of a logistic regression to s by Newton's
// method (iteratively reweighted least squares), starting from w, which
// it updates. The weighted log loss is penalised by lambda/2 times the
// squared weights, the intercept (feature 0) excepted, which keeps the fit
// defined when a feature is constant or the classes separate. A step
// that does not lower the loss is halved. It returns the weighted mean
// log loss. Each pass over the samples is split into runs of fitRows,
// workers at a time (see passParts): the fit is the same whatever
// the number of workers.
func fitLogistic(s *samples, w []float64, lambda float64, workers int) float64 {
	d, n := s.d, s.len()
	if n == 0 {
		return 0
	}
	var total float64
	for _, c := range s.c {
		total += c
	}
	// The penalty scales with the data, so lambda means the same for any
	// sample size.
	pen := lambda * total
	hess := mat.NewSymDense(d, nil)
	grad := mat.NewVecDense(d, nil)
	dir := mat.NewVecDense(d, nil)
	h, g := hess.RawSymmetric().Data, grad.RawVector().Data
	var chol mat.Cholesky
	parts := newPassParts(n, d)

	// pass computes the loss at w, and its gradient and Hessian into g
	// and h.
	pass := func(w []float64) float64 {
		loss := parts.pass(s, w, g, h, workers)
		for j := 1; j < d; j++ {
			loss += pen / 2 * w[j] * w[j]
			g[j] += pen * w[j]
			h[j*d+j] += pen
		}
		h[0] += 1e-9 * total // keeps the intercept's curvature positive
		return loss
	}

	best := math.Inf(1) // loss at prev, the last accepted weights
	prev := make([]float64, d)
	step := 1.0
	for range 50 {
		loss := pass(w)
		if !(loss < best) { // the step overshot (or went NaN): halve it
			step /= 2
			if step < 1e-4 {
				copy(w, prev)
				break
			}
			for j := range w {
				w[j] = prev[j] - step*dir.AtVec(j)
			}
			continue
		}
		converged := best-loss < 1e-9*loss
		best = loss
		copy(prev, w)
		if converged || !chol.Factorize(hess) || chol.SolveVecTo(dir, grad) != nil {
			break
		}
		// Newton decrement: the loss the full step is expected to save.
		if mat.Dot(grad, dir)/2 < 1e-4*loss {
			break
		}
		step = 1
		for j := range w {
			w[j] = prev[j] - dir.AtVec(j)
		}
	}
	return best / total
}

// fitRows is how many samples a run of logisticPass takes: 196 608
// samples, the most a fit keeps, are 12 runs.
const fitRows = 1 << 14

// passParts holds each run's loss, gradient and Hessian: a pass sums them
// in the runs' order, so that its result does not depend on which worker
// took which run.
type passParts struct {
	loss []float64
	g, h [][]float64
}

func newPassParts(n, d int) *passParts {
	runs := (n + fitRows - 1) / fitRows
	p := &passParts{loss: make([]float64, runs), g: make([][]float64, runs), h: make([][]float64, runs)}
	for r := range runs {
		p.g[r], p.h[r] = make([]float64, d), make([]float64, d*d)
	}
	return p
}

// pass sets g and h to the gradient and Hessian (upper triangle) of the
// samples' weighted log loss at w, and returns the loss: logisticPass over
// each run of fitRows samples, up to workers runs at once.
func (p *passParts) pass(s *samples, w, g, h []float64, workers int) float64 {
	d, n := s.d, s.len()
	run := func(r int) {
		lo, hi := r*fitRows, min((r+1)*fitRows, n)
		clear(p.g[r])
		clear(p.h[r])
		sub := samples{d: d, x: s.x[lo*d : hi*d], y: s.y[lo:hi], c: s.c[lo:hi]}
		p.loss[r] = logisticPass(&sub, w, p.g[r], p.h[r])
	}
	eachRun(len(p.loss), workers, run)
	clear(g)
	clear(h)
	var loss float64
	for r := range p.loss {
		loss += p.loss[r]
		for j, v := range p.g[r] {
			g[j] += v
		}
		for j, v := range p.h[r] {
			h[j] += v
		}
	}
	return loss
}

// logisticPass returns the weighted log loss of the samples at w, and
// adds its gradient to g and its Hessian's upper triangle to h (d×d,
// row-major).
//
//go:norace
func logisticPass(s *samples, w, g, h []float64) float64 {
	// The race detector is off in this loop over one model's samples
	// (see doc.go, Tests).
	d, n := s.d, s.len()
	var loss float64
	nz := make([]int, 0, d) // the nonzero features of a row
	for i := range n {
		xi := s.x[i*d : (i+1)*d]
		z := dot(xi, w)
		c, y := s.c[i], s.y[i]
		// log(1+e^z) - y·z, and p = σ(z), from one exponential.
		e := expNonPositive(-math.Abs(z))
		sp := log1pUnit(e) + max(z, 0)
		p := 1 / (1 + e)
		if z < 0 {
			p = e / (1 + e)
		}
		loss += c * (sp - y*z)
		r := c * (p - y)
		q := c * max(p*(1-p), 1e-12)
		// Over the row's nonzero features only: most rows have few
		// (the cohort, due and region features are mostly zero).
		nz = nz[:0]
		for a, xa := range xi {
			if xa != 0 {
				nz = append(nz, a)
			}
		}
		for i1, a := range nz {
			xa := float64(xi[a])
			g[a] += r * xa
			row := h[a*d:]
			qa := q * xa
			for _, b := range nz[i1:] {
				row[b] += qa * float64(xi[b])
			}
		}
	}
	return loss
}

// expNonPositive is e^x for x <= 0, within a few ulps; 0 below -708. It
// is math.Exp without the call, which the race detector makes costly
// in logisticPass's loop.
//
//go:norace
func expNonPositive(x float64) float64 {
	if x < -708 {
		return 0
	}
	// x = k·ln2 + r, |r| <= ln2/2; e^r by its Taylor series to r^13, as
	// its even terms plus r times its odd ones, each a polynomial in r²
	// with coefficients 1/n!: two short chains of multiply-adds the CPU
	// runs side by side. One long chain, with a division in each step,
	// cost more than the rest of a sample's pass in logisticPass.
	const ln2Hi, ln2Lo = 6.93147180369123816490e-01, 1.90821492927058770002e-10
	k := math.Floor(x*math.Log2E + 0.5)
	r := x - k*ln2Hi - k*ln2Lo
	r2 := r * r
	even := 1 + r2*(1.0/2+r2*(1.0/24+r2*(1.0/720+r2*(1.0/40320+r2*(1.0/3628800+r2*(1.0/479001600))))))
	odd := 1 + r2*(1.0/6+r2*(1.0/120+r2*(1.0/5040+r2*(1.0/362880+r2*(1.0/39916800+r2*(1.0/6227020800))))))
	return (even + r*odd) * math.Float64frombits(uint64(int64(k)+1023)<<52)
}

// log1pUnit is log(1+e) for 0 <= e <= 1, within a few ulps: 2·atanh(s),
// s = e/(2+e) <= 1/3, by its series s + s³/3 + s⁵/5 … to s⁴¹, split
// like expNonPositive's into two polynomials in s⁴.
//
//go:norace
func log1pUnit(e float64) float64 {
	s := e / (2 + e)
	s2 := s * s
	s4 := s2 * s2
	a := 1 + s4*(1.0/5+s4*(1.0/9+s4*(1.0/13+s4*(1.0/17+s4*(1.0/21+s4*(1.0/25+s4*(1.0/29+s4*(1.0/33+s4*(1.0/37+s4*(1.0/41))))))))))
	b := 1.0/3 + s4*(1.0/7+s4*(1.0/11+s4*(1.0/15+s4*(1.0/19+s4*(1.0/23+s4*(1.0/27+s4*(1.0/31+s4*(1.0/35+s4*(1.0/39)))))))))
	return 2 * s * (a + s2*b)
}

func dot(x []float32, w []float64) float64 {
	var z float64
	for j, v := range x {
		z += float64(v) * w[j]
	}
	return z
}
