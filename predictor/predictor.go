package predictor

// Predictor forecasts, page by page, whether a VM dirties each of its
// pages in the next epoch. The model and every baseline implement it. A
// Predictor is fed one closed epoch at a time and is not safe for
// concurrent use.
type Predictor interface {
	// Name identifies the predictor in tables and plots.
	Name() string
	// Observe closes one epoch: dirty holds the pages dirtied in it,
	// ascending and distinct, each below the predictor's page count.
	Observe(dirty []uint64)
	// Predict writes to dst the probability that each page is dirtied
	// in the next epoch; len(dst) must be the page count.
	Predict(dst []float32)
}

// HorizonPredictor is a Predictor that also forecasts further ahead.
type HorizonPredictor interface {
	Predictor
	// PredictHorizon writes to dst the probability that each page is
	// dirtied at least once in the next h epochs (h >= 1; h == 1 is
	// Predict).
	PredictHorizon(dst []float32, h int)
}

// Compile-time checks that every predictor forecasts any horizon.
var (
	_ HorizonPredictor = (*Model)(nil)
	_ HorizonPredictor = (*lastEpoch)(nil)
	_ HorizonPredictor = (*frequency)(nil)
	_ HorizonPredictor = (*markov)(nil)
)

// checkLen panics when a prediction buffer does not have one entry a
// page: a programming error, like an out-of-range slice index.
func checkLen(dst []float32, pages uint64) {
	if uint64(len(dst)) != pages {
		panic("predictor: prediction buffer length does not match the page count")
	}
}
