//go:build race

package engine

// raceOn: the race detector slows the forward pass about tenfold, so
// the heaviest tests check fewer prompts.
const raceOn = true
