//go:build unix && !linux

package dram

import "os"

// mapArena backs the arena with an unlinked temporary file mapped shared.
// Huge pages are not requested on these platforms.
func mapArena(name string, size int64, o *options) ([]byte, *os.File, func([]byte) error, error) {
	return mapTempFile(name, size, o)
}
