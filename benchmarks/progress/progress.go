// Package progress draws a progress bar on a terminal (stderr, by the
// benchmark commands' convention, so stdout stays parseable): a bar, the
// percentage, a label and the time left, redrawn in place at most five
// times a second. When the writer is not a terminal it prints a plain line
// at each tenth instead, so logs stay short.
//
// A Bar is safe for concurrent use.
package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

const width = 30

// Bar is one progress bar.
type Bar struct {
	mu     sync.Mutex // protects the fields below
	w      io.Writer
	tty    bool
	start  time.Time
	last   time.Time
	lastQ  int // the last tenth printed when not a terminal
	label  string
	done   bool
	frac   float64
	prefix string
}

// New starts a bar on w titled prefix. A nil w or io.Discard draws nothing.
func New(w io.Writer, prefix string) *Bar {
	if w == nil {
		w = io.Discard
	}
	b := &Bar{w: w, start: time.Now(), prefix: prefix, lastQ: -1}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			b.tty = true
		}
	}
	return b
}

// Set moves the bar to frac (0..1) with a label for the current step.
func (b *Bar) Set(frac float64, label string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return
	}
	b.frac, b.label = min(max(frac, 0), 1), label
	now := time.Now()
	if b.tty {
		if now.Sub(b.last) < 200*time.Millisecond && frac < 1 {
			return
		}
		b.last = now
		fmt.Fprintf(b.w, "\r\033[K%s", b.line(now))
		return
	}
	if q := int(b.frac * 10); q > b.lastQ {
		b.lastQ = q
		fmt.Fprintln(b.w, b.line(now))
	}
}

// Done finishes the bar with a final line.
func (b *Bar) Done(msg string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return
	}
	b.done = true
	el := time.Since(b.start).Round(100 * time.Millisecond)
	if b.tty {
		fmt.Fprintf(b.w, "\r\033[K")
	}
	fmt.Fprintf(b.w, "%s: %s in %s\n", b.prefix, msg, el)
}

func (b *Bar) line(now time.Time) string {
	n := int(b.frac * width)
	el := now.Sub(b.start)
	left := "?"
	if b.frac > 0.01 {
		left = (time.Duration(float64(el)/b.frac) - el).Round(time.Second).String()
	}
	return fmt.Sprintf("%s [%s%s] %3.0f%% %s, %s left", b.prefix, strings.Repeat("=", n), strings.Repeat(" ", width-n), b.frac*100, b.label, left)
}
