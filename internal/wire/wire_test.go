package wire

import (
	"errors"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

func reader(b []byte) *mem.Reader {
	return mem.BufferSlice{mem.SliceBuffer(b)}.Reader()
}

func TestNext(t *testing.T) {
	type field struct {
		num protowire.Number
		typ protowire.Type
		v   uint64
	}
	var msg []byte
	msg = protowire.AppendTag(msg, 1, protowire.VarintType)
	msg = protowire.AppendVarint(msg, 300)
	msg = protowire.AppendTag(msg, 2, protowire.Fixed32Type)
	msg = protowire.AppendFixed32(msg, 7)
	msg = protowire.AppendTag(msg, 3, protowire.Fixed64Type)
	msg = protowire.AppendFixed64(msg, 9)
	msg = protowire.AppendTag(msg, 4, protowire.BytesType)
	msg = protowire.AppendBytes(msg, []byte("abc"))
	tests := []struct {
		name string
		in   []byte
		want []field // then the bytes "abc" for a bytes field
		err  bool    // the field after want is malformed
	}{
		{"every wire type", msg, []field{{1, protowire.VarintType, 300}, {2, protowire.Fixed32Type, 0}, {3, protowire.Fixed64Type, 0}, {4, protowire.BytesType, 3}}, false},
		{"truncated tag", []byte{0x80}, nil, true},
		{"truncated varint value", []byte{0x08, 0x80}, nil, true},
		{"truncated fixed64", []byte{0x19, 1, 2, 3}, nil, true},
		{"bytes longer than the message", []byte{0x22, 4, 'a', 'b', 'c'}, nil, true},
		{"group", protowire.AppendTag(nil, 5, protowire.StartGroupType), nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := reader(tc.in)
			for _, w := range tc.want {
				num, typ, v, err := Next(r)
				if err != nil || num != w.num || typ != w.typ || v != w.v {
					t.Fatalf("Next = %d %d %d %v, want %+v", num, typ, v, err, w)
				}
				if typ == protowire.BytesType {
					b := make([]byte, v)
					if _, err := r.Read(b); err != nil || string(b) != "abc" {
						t.Fatalf("bytes field holds %q, %v", b, err)
					}
				}
			}
			if tc.err {
				if _, _, _, err := Next(r); !errors.Is(err, ErrMalformed) {
					t.Fatalf("Next: %v, want ErrMalformed", err)
				}
			} else if r.Remaining() != 0 {
				t.Fatalf("%d bytes left", r.Remaining())
			}
		})
	}
}

// FuzzNext checks Next against protowire.ConsumeField: the same fields, the
// same lengths, and an error exactly where protowire finds one (groups
// aside, which Next refuses).
func FuzzNext(f *testing.F) {
	f.Add([]byte{0x08, 0xac, 0x02, 0x22, 1, 'x'})
	f.Add([]byte{0x0b, 0x0c})
	f.Add([]byte("\xfa\x00\x010")) // an overlong tag
	f.Fuzz(func(t *testing.T, b []byte) {
		r := reader(b)
		for len(b) > 0 {
			num, typ, v, err := Next(r)
			wnum, wtyp, n := protowire.ConsumeField(b)
			if n < 0 || wtyp == protowire.StartGroupType || wtyp == protowire.EndGroupType {
				if err == nil && typ != protowire.StartGroupType {
					// protowire also rejects field number 0 and numbers
					// out of range; Next leaves those to the caller.
					if _, _, m := protowire.ConsumeTag(b); m > 0 {
						t.Fatalf("Next accepted %x, which protowire rejects", b)
					}
				}
				return
			}
			if err != nil || num != wnum || typ != wtyp {
				t.Fatalf("Next = %d %d %v, protowire %d %d", num, typ, err, wnum, wtyp)
			}
			if typ == protowire.BytesType {
				_, _, tn := protowire.ConsumeTag(b)
				if p, _ := protowire.ConsumeBytes(b[tn:]); uint64(len(p)) != v {
					t.Fatalf("bytes field of %d, protowire %d", v, len(p))
				}
				if _, err := r.Discard(int(v)); err != nil {
					t.Fatal(err)
				}
			}
			b = b[n:]
		}
		if r.Remaining() != 0 {
			t.Fatalf("%d bytes left", r.Remaining())
		}
	})
}
