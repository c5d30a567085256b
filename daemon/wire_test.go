package daemon

import (
	"bytes"
	"errors"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
	"github.com/kvtier/kvtier/tiers"
)

// split returns b as a BufferSlice of pieces of at most n bytes, as gRPC
// hands over a message received in several frames.
func split(b []byte, n int) mem.BufferSlice {
	var s mem.BufferSlice
	for len(b) > 0 {
		k := min(n, len(b))
		s = append(s, mem.SliceBuffer(append([]byte(nil), b[:k]...)))
		b = b[k:]
	}
	return s
}

func TestPutDecode(t *testing.T) {
	hdr := &pb.PutHeader{Key: &pb.Key{Namespace: "n", Hash: make([]byte, 16)}, Layout: &pb.Layout{Dtype: 1, Tokens: 1, KvHeads: 1, HeadDim: 8}}
	data := bytes.Repeat([]byte{7}, 32)
	marshal := func(m *pb.PutRequest) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	c := newServerWire()
	for _, tc := range []struct {
		name  string
		msgs  [][]byte
		n     int
		field string // "" = no error
	}{
		{"one message", [][]byte{marshal(&pb.PutRequest{Header: hdr, Data: data})}, 32, ""},
		{"header then chunks", [][]byte{marshal(&pb.PutRequest{Header: hdr}), marshal(&pb.PutRequest{Data: data[:10]}), marshal(&pb.PutRequest{Data: data[10:]})}, 32, ""},
		{"data before header", [][]byte{append(marshal(&pb.PutRequest{Data: data[:5]}), marshal(&pb.PutRequest{Header: hdr})...)}, 5, ""},
		{"no header", [][]byte{marshal(&pb.PutRequest{Data: data})}, 0, "header"},
		{"second header", [][]byte{marshal(&pb.PutRequest{Header: hdr}), marshal(&pb.PutRequest{Header: hdr})}, 0, "header"},
		{"too much data", [][]byte{marshal(&pb.PutRequest{Header: hdr, Data: data}), marshal(&pb.PutRequest{Data: data[:1]})}, 32, "data"},
		{"truncated", [][]byte{marshal(&pb.PutRequest{Header: hdr, Data: data})[:20]}, 0, "PutRequest"},
	} {
		for _, piece := range []int{1, 7, 1 << 20} {
			t.Run(tc.name, func(t *testing.T) {
				dst := make([]byte, 32)
				m := putMsg{first: true, onHeader: func(h *pb.PutHeader) ([]byte, error) {
					if !proto.Equal(h, hdr) {
						t.Errorf("header %v", h)
					}
					return dst, nil
				}}
				for _, b := range tc.msgs {
					if err := c.Unmarshal(split(b, piece), &m); err != nil {
						t.Fatal(err)
					}
					if m.err != nil {
						break
					}
				}
				var fe *FieldError
				switch {
				case tc.field == "" && m.err != nil:
					t.Fatalf("error %v", m.err)
				case tc.field != "" && (!errors.As(m.err, &fe) || fe.Field != tc.field):
					t.Fatalf("error %v, want a FieldError for %q", m.err, tc.field)
				case tc.field == "" && (m.n != tc.n || !bytes.Equal(dst[:m.n], data[:m.n])):
					t.Fatalf("wrote %d bytes %v", m.n, dst[:m.n])
				}
			})
		}
	}
	// Other messages still go through gRPC's proto marshaler.
	var st pb.StatsRequest
	if err := c.Unmarshal(split(nil, 1), &st); err != nil {
		t.Fatal(err)
	}
}

// FuzzPutDecode: any bytes decode to data in the reservation or an error,
// never a panic or a write outside it.
func FuzzPutDecode(f *testing.F) {
	hdr := &pb.PutHeader{Key: &pb.Key{Namespace: "n", Hash: make([]byte, 16)}, Layout: &pb.Layout{Dtype: 1, Tokens: 1, KvHeads: 1, HeadDim: 8}}
	b, _ := proto.Marshal(&pb.PutRequest{Header: hdr, Data: make([]byte, 32)})
	f.Add(b, uint8(3))
	f.Add([]byte{0x12, 0xff, 0xff, 0xff, 0xff, 0x0f}, uint8(1))
	c := newServerWire()
	f.Fuzz(func(t *testing.T, b []byte, piece uint8) {
		dst := make([]byte, 32)
		m := putMsg{first: true, onHeader: func(*pb.PutHeader) ([]byte, error) { return dst, nil }}
		for range 2 {
			if err := c.Unmarshal(split(b, int(piece)+1), &m); err != nil {
				t.Fatal(err)
			}
			if m.err != nil {
				if !errors.Is(m.err, tiers.ErrInvalid) {
					t.Fatalf("error %v does not wrap ErrInvalid", m.err)
				}
				return
			}
			if m.n > len(dst) {
				t.Fatalf("wrote %d bytes into 32", m.n)
			}
		}
	})
}
