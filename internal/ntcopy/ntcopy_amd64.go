package ntcopy

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

// blockBytes is what one iteration of the assembly loop copies.
const blockBytes = 128

var useAVX2 = cpu.X86.HasAVX2

func aligned(b []byte) bool { return uintptr(unsafe.Pointer(unsafe.SliceData(b)))&31 == 0 }

// copyNT copies len(dst) bytes, a multiple of blockBytes, with 32-byte
// aligned dst; false when the CPU cannot.
func copyNT(dst, src []byte) bool {
	if !useAVX2 || len(dst) == 0 {
		return false
	}
	copyNTAVX2(unsafe.SliceData(dst), unsafe.SliceData(src), len(dst)/blockBytes)
	return true
}

// copyNTAVX2 copies blocks×128 bytes from src to the 32-byte aligned dst
// with VMOVNTDQ, then SFENCE, so that the stores are ordered before any
// later store (the lock release that publishes the block).
//
//go:noescape
func copyNTAVX2(dst, src *byte, blocks int)

// setNT turns the non-temporal path on (where the CPU has AVX2) or off and
// returns the previous setting; for tests.
func setNT(on bool) bool {
	old := useAVX2
	useAVX2 = on && cpu.X86.HasAVX2
	return old
}
