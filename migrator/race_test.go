//go:build race

package migrator

// raceEnabled: the race detector slows every goroutine several times over,
// and the engine's time counts drift from what its test guests measure.
const raceEnabled = true
