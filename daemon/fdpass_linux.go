package daemon

import (
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

const fdPassingSupported = true

// sendFD sends f's descriptor over c in an SCM_RIGHTS message with one
// byte of payload.
func sendFD(c *net.UnixConn, f *os.File) error {
	raw, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var werr error
	cerr := raw.Control(func(fd uintptr) {
		n, oobn, err := c.WriteMsgUnix([]byte{1}, unix.UnixRights(int(fd)), nil)
		switch {
		case err != nil:
			werr = err
		case n != 1 || oobn == 0:
			werr = fmt.Errorf("daemon: short write passing the arena descriptor")
		}
	})
	if cerr != nil {
		return cerr
	}
	return werr
}
