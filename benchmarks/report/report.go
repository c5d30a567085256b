package report

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
)

// JSON writes rows as one indented JSON array; no rows is [], never null,
// so scripts can always index the result.
func JSON[T any](w io.Writer, rows []T) error {
	if rows == nil {
		rows = []T{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rows)
}

// Finisher is the progress line a run ends on.
type Finisher interface{ Done(msg string) }

// Outcome ends a run that measured n rows and returned err: it closes the
// progress line and returns the exit code, 130 when ctx was cancelled
// (Ctrl-C: the rows so far are still printed), 1 when the run failed (the
// error goes to stderr under name), 0 otherwise.
func Outcome(ctx context.Context, bar Finisher, stderr io.Writer, name string, n int, err error) int {
	switch {
	case err != nil && ctx.Err() != nil:
		bar.Done(fmt.Sprintf("interrupted; %d rows measured so far", n))
		return 130
	case err != nil:
		bar.Done("failed")
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 1
	default:
		bar.Done(fmt.Sprintf("%d rows", n))
		return 0
	}
}
