package client

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// mapArena fetches the arena's descriptor from the daemon's descriptor
// socket and maps it shared, read-write.
func mapArena(ctx context.Context, path string, token []byte, size uint64) ([]byte, error) {
	if size == 0 || size > math.MaxInt {
		return nil, fmt.Errorf("arena size %d", size)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	uc := c.(*net.UnixConn)
	dl := time.Now().Add(10 * time.Second)
	if t, ok := ctx.Deadline(); ok && t.Before(dl) {
		dl = t
	}
	_ = uc.SetDeadline(dl)
	if _, err := uc.Write(token); err != nil {
		return nil, err
	}
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := uc.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, fmt.Errorf("reading the descriptor (refused by the daemon?): %w", err)
	}
	if n != 1 || oobn == 0 {
		return nil, errors.New("the daemon sent no descriptor")
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, fmt.Errorf("bad control message: %v", err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("bad descriptor message: %v", err)
	}
	defer unix.Close(fds[0])
	var st unix.Stat_t
	if err := unix.Fstat(fds[0], &st); err != nil {
		return nil, err
	}
	if uint64(st.Size) < size {
		return nil, fmt.Errorf("arena file is %d bytes, the session says %d", st.Size, size)
	}
	mem, err := unix.Mmap(fds[0], 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap: %w", err)
	}
	return mem, nil
}

func unmapArena(mem []byte) error { return unix.Munmap(mem) }
