package main

import (
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// progress is a progress bar with the rate and the time left, drawn on w
// only when w is a terminal; otherwise it draws nothing.
type progress struct {
	bar *progressbar.ProgressBar // nil: not drawn
}

func newProgress(w io.Writer, total int, what string) *progress {
	if !isTerminal(w) {
		return &progress{}
	}
	return &progress{bar: newBar(w, total, what, 100*time.Millisecond)}
}

// newBar draws on w, terminal or not (tests draw into a buffer), at most
// once every throttle.
func newBar(w io.Writer, total int, what string, throttle time.Duration) *progressbar.ProgressBar {
	return newBarOf(w, total, what, "records", throttle)
}

// newBarOf is newBar counting unit (records, rows).
func newBarOf(w io.Writer, total int, what, unit string, throttle time.Duration) *progressbar.ProgressBar {
	return progressbar.NewOptions(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString(unit),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(throttle),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionSetRenderBlankState(true),
	)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func (p *progress) add(n int) {
	if p.bar != nil {
		_ = p.bar.Add(n)
	}
}

// done completes the bar and clears it.
func (p *progress) done() {
	if p.bar != nil {
		_ = p.bar.Finish()
	}
}

// abort clears the bar where it stands, before an error is printed.
func (p *progress) abort() {
	if p.bar != nil {
		_ = p.bar.Clear()
	}
}
