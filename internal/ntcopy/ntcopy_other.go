//go:build !amd64

package ntcopy

const blockBytes = 128

func aligned([]byte) bool { return false }

func copyNT(dst, src []byte) bool { return false }

func setNT(bool) bool { return false }
