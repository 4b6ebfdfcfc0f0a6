//go:build race

package simulate

// raceDetector: the race detector is on (see race_test.go).
const raceDetector = true
