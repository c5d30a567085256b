package nvme

import (
	"testing"
	"unsafe"
)

func TestBufClass(t *testing.T) {
	for _, tc := range []struct{ n, cls int }{
		{1, 0}, {64 << 10, 0}, {64<<10 + 1, 1}, {128 << 10, 1},
		{4<<20 + 8<<10, 7}, {64 << 20, 10}, {64<<20 + 1, 11},
	} {
		if got := bufClass(tc.n); got != tc.cls {
			t.Errorf("bufClass(%d) = %d, want %d", tc.n, got, tc.cls)
		}
	}
}

func TestReadBufs(t *testing.T) {
	var c readBufs
	for _, n := range []int{4096, 70 << 10, 4<<20 + 8192, 65 << 20} {
		b, err := c.get(n)
		if err != nil {
			t.Fatal(err)
		}
		if len(b.b) < n || uintptr(unsafe.Pointer(unsafe.SliceData(b.b)))%directAlign != 0 {
			t.Fatalf("get(%d): %d bytes at %p, want at least %d, %d-aligned", n, len(b.b), unsafe.SliceData(b.b), n, directAlign)
		}
		b.b[n-1] = 1 // writable to the end
		c.put(b)
		again, err := c.get(n)
		if err != nil {
			t.Fatal(err)
		}
		// A buffer past the largest class is unmapped on put (the next
		// mapping may land at the same address, so only reuse is checked).
		if bufClass(n) < numBufClasses && unsafe.SliceData(again.b) != unsafe.SliceData(b.b) {
			t.Errorf("get(%d) after put got a new buffer", n)
		}
		c.put(again)
	}
	// Kept buffers are bounded per class.
	var held []readBuf
	for range keepPerClass + 3 {
		b, err := c.get(1 << 20)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, b)
	}
	for _, b := range held {
		c.put(b)
	}
	if got := len(c.free[bufClass(1<<20)]); got != keepPerClass {
		t.Errorf("%d buffers kept in a class, want %d", got, keepPerClass)
	}
	c.close()
	for cls := range c.free {
		if len(c.free[cls]) != 0 {
			t.Fatalf("class %d keeps %d buffers after close", cls, len(c.free[cls]))
		}
	}
	b, err := c.get(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	c.put(b) // freed, not kept
	if len(c.free[bufClass(1<<20)]) != 0 {
		t.Error("a buffer put back after close was kept")
	}
}
