//go:build !race

package predictor

const raceDetector = false
