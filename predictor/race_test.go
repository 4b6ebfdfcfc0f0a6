//go:build race

package predictor

// raceDetector: the race detector is on. The package's tests are to finish
// under it within 60 s on a two-core machine (issue 13); the heaviest of
// them that only score, and share no state across goroutines the others
// do not, run in make test's second pass without it.
const raceDetector = true
