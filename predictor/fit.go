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
	x []float64 // rows × d
	y []float64
	c []float64
}

func (s *samples) len() int { return len(s.y) }

func (s *samples) add(x []float64, y bool, c float64) {
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
// defined when a feature is constant or the classes separate. It returns
// the weighted mean log loss.
func fitLogistic(s *samples, w []float64, lambda float64) float64 {
	d := s.d
	n := s.len()
	if n == 0 {
		return 0
	}
	var total float64
	for _, c := range s.c {
		total += c
	}
	// The penalty scales with the data so that lambda means the same
	// for any sample size.
	pen := lambda * total
	loss := func(w []float64) float64 {
		var l float64
		for i := range n {
			z := dot(s.x[i*d:(i+1)*d], w)
			// log(1+e^z) - y·z, stable for large |z|.
			l += s.c[i] * (softplus(z) - s.y[i]*z)
		}
		for j := 1; j < d; j++ {
			l += pen / 2 * w[j] * w[j]
		}
		return l
	}
	hess := mat.NewSymDense(d, nil)
	grad := mat.NewVecDense(d, nil)
	step := mat.NewVecDense(d, nil)
	next := make([]float64, d)
	var chol mat.Cholesky
	cur := loss(w)
	for iter := 0; iter < 30; iter++ {
		hess.Zero()
		grad.Zero()
		h := hess.RawSymmetric().Data
		g := grad.RawVector().Data
		for i := range n {
			xi := s.x[i*d : (i+1)*d]
			p := sigmoid(dot(xi, w))
			r := s.c[i] * (p - s.y[i])
			q := s.c[i] * max(p*(1-p), 1e-12)
			for a, xa := range xi {
				if xa == 0 {
					continue
				}
				g[a] += r * xa
				row := h[a*d:]
				qa := q * xa
				for b := a; b < d; b++ {
					row[b] += qa * xi[b]
				}
			}
		}
		for j := 1; j < d; j++ {
			g[j] += pen * w[j]
			h[j*d+j] += pen
		}
		h[0] += 1e-9 * total // keeps the intercept's curvature positive
		if !chol.Factorize(hess) {
			break
		}
		if err := chol.SolveVecTo(step, grad); err != nil {
			break
		}
		// Newton step, halved until the loss goes down.
		improved := false
		for t := 1.0; t > 1e-4; t /= 2 {
			for j := range d {
				next[j] = w[j] - t*step.AtVec(j)
			}
			if l := loss(next); l <= cur {
				improved = cur-l > 1e-9*math.Max(1, math.Abs(cur))
				copy(w, next)
				cur = l
				break
			}
		}
		if !improved {
			break
		}
	}
	return cur / total
}

func dot(x, w []float64) float64 {
	var z float64
	for j, v := range x {
		z += v * w[j]
	}
	return z
}

// softplus is log(1+e^z).
func softplus(z float64) float64 {
	if z > 30 {
		return z
	}
	return math.Log1p(math.Exp(z))
}
