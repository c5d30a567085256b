//go:build !linux

package daemon

import (
	"net"
	"os"
)

const fdPassingSupported = false

func sendFD(*net.UnixConn, *os.File) error { return ErrShmUnavailable }
