package nvme

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/kvtier/kvtier/codec"
	"github.com/kvtier/kvtier/tiers"
)

// TestPutFrameGetFrame: frames go in and come out as they are, whatever the
// namespace's mode; Get decodes them; damaged frames are refused at
// PutFrame; a frame's bytes survive a reopen.
func TestPutFrameGetFrame(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	tr := openTest(t, dir, 64<<20)
	l := testLayout(32)
	data := block(l, 1)
	frame, err := codec.Encode(nil, l, data, codec.Options{Mode: codec.Int8})
	if err != nil {
		t.Fatal(err)
	}
	_, decoded, err := codec.Decode(nil, frame)
	if err != nil {
		t.Fatal(err)
	}
	k := testKey("ns", 1)
	if err := tr.PutFrame(ctx, k, frame); err != nil {
		t.Fatal(err)
	}
	gl, got, err := tr.GetFrame(ctx, k, []byte("prefix"))
	if err != nil || gl != l || !bytes.Equal(got, append([]byte("prefix"), frame...)) {
		t.Fatalf("GetFrame: layout %v, %d bytes, %v; want the frame appended", gl, len(got), err)
	}
	mustGet(t, tr, k, l, decoded)
	if st := tr.Stats(); st.UsedBytes != int64(len(frame)) {
		t.Fatalf("UsedBytes %d, want the frame's %d", st.UsedBytes, len(frame))
	}

	// A block put raw comes out of GetFrame in the namespace's mode.
	k2 := testKey("ns", 2)
	mustPut(t, tr, k2, l, data)
	_, f2, err := tr.GetFrame(ctx, k2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, out, err := codec.Decode(nil, f2); err != nil || !bytes.Equal(out, data) {
		t.Fatalf("GetFrame of a Put block does not decode to it: %v", err)
	}

	bad := []struct {
		name  string
		frame []byte
	}{
		{"empty", nil},
		{"header only", frame[:codec.HeaderLen]},
		{"truncated", frame[:len(frame)-1]},
		{"trailing byte", append(append([]byte{}, frame...), 0)},
		{"flipped payload byte", func() []byte { f := append([]byte{}, frame...); f[len(f)-1] ^= 1; return f }()},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			if err := tr.PutFrame(ctx, testKey("ns", 3), c.frame); !errors.Is(err, tiers.ErrInvalid) {
				t.Fatalf("PutFrame: %v, want ErrInvalid", err)
			}
			if _, _, err := tr.GetFrame(ctx, testKey("ns", 3), nil); !errors.Is(err, tiers.ErrNotFound) {
				t.Fatalf("a refused frame was stored: %v", err)
			}
		})
	}

	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	tr = openTest(t, dir, 64<<20)
	if _, got, err := tr.GetFrame(ctx, k, nil); err != nil || !bytes.Equal(got, frame) {
		t.Fatalf("after reopen: %v", err)
	}
}
