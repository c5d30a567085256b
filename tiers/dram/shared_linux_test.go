package dram

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestMemfdSealed checks that the arena is a memfd that a client cannot
// resize (which would make the daemon's accesses fault).
func TestMemfdSealed(t *testing.T) {
	a := newArena(t, 4*MiB, WithName("sealtest"))
	f := a.File()
	link, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(f.Fd())))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	if !strings.HasPrefix(link, "/memfd:kvtier-sealtest") {
		t.Skipf("not a memfd (%s): memfd_create unavailable, using the file fallback", link)
	}
	seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_SEAL; seals&want != want {
		t.Fatalf("seals %#x, want %#x", seals, want)
	}
	if err := f.Truncate(0); !errors.Is(err, unix.EPERM) {
		t.Fatalf("shrinking the memfd: %v, want EPERM", err)
	}
	if err := f.Truncate(2 * a.Size()); !errors.Is(err, unix.EPERM) {
		t.Fatalf("growing the memfd: %v, want EPERM", err)
	}
	if st, _ := f.Stat(); st.Size() != a.Size() {
		t.Fatalf("memfd size %d, want %d", st.Size(), a.Size())
	}
}
