//go:build !linux || !cgo

package gputest

import (
	"os"
	"testing"
)

// BuildFake needs cgo on Linux to load the fake library. Without it the test
// is skipped, or fails under CI, which must exercise the cgo path.
func BuildFake(t testing.TB, flags ...Flag) *Fake {
	t.Helper()
	RequireCgo(t)
	return nil
}

// RequireCgo skips the test in a build without cgo on Linux, or fails it
// under CI, which must exercise the cgo paths.
func RequireCgo(t testing.TB) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatal("this test needs cgo on linux, and CI is set")
	}
	t.Skip("this test needs cgo on linux")
}
