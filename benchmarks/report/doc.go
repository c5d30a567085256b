// Package report owns what every `kvtier bench` command prints the same
// way: its rows as one JSON array on stdout, and how a run that was
// interrupted, failed or finished is told on the progress line and in the
// exit code.
package report
