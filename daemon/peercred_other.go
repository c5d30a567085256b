//go:build !linux

package daemon

import (
	"fmt"
	"net"
)

// peerCred is unavailable off Linux, so shared memory is too.
func peerCred(*net.UnixConn) (PeerCred, error) {
	return PeerCred{}, fmt.Errorf("%w: peer credentials need Linux", ErrShmUnavailable)
}
