//go:build !race

package migrator

const raceEnabled = false
