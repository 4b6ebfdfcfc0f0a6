//go:build race

package simulate_test

// raceDetector: the race detector is on. It slows the live engine's
// compression and page copying severalfold, a cost the live side then
// measures (in its link rate and in MECOM's codec choice) and the
// simulation does not model.
const raceDetector = true
