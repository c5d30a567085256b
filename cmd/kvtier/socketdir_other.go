//go:build !unix

package main

import "os"

// ensurePrivateDir creates dir; ownership is not checked off Unix.
func ensurePrivateDir(dir string) error { return os.MkdirAll(dir, 0o700) }
