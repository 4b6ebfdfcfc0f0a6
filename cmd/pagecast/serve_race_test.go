//go:build race

package main

// raceEnabled: the race detector slows every request several times over.
const raceEnabled = true
