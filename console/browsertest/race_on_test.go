//go:build race

package browsertest

// raceDetector: the race pass skips the browser tests (see browser_test.go).
const raceDetector = true
