//go:build !race

package systemtest

// raceDetector says whether the tests run under the race detector.
const raceDetector = false
