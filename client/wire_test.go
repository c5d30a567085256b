package client

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
)

func pieces(b []byte, n int) mem.BufferSlice {
	var s mem.BufferSlice
	for len(b) > 0 {
		k := min(n, len(b))
		s = append(s, mem.SliceBuffer(append([]byte(nil), b[:k]...)))
		b = b[k:]
	}
	return s
}

func TestGetDecode(t *testing.T) {
	data := bytes.Repeat([]byte{1, 2, 3}, 100)
	first, _ := proto.Marshal(&pb.GetResponse{Layout: &pb.Layout{Dtype: 1, Tokens: 5}, From: pb.Tier_TIER_NVME, TotalBytes: uint64(len(data)), Data: data[:100]})
	rest, _ := proto.Marshal(&pb.GetResponse{Data: data[100:]})
	c := getWire{protoWire}
	for _, piece := range []int{1, 3, 1000} {
		for _, dst := range [][]byte{nil, make([]byte, 0, 1000)} {
			g := getChunk{dst: dst}
			for _, b := range [][]byte{first, rest} {
				if err := c.Unmarshal(pieces(b, piece), &g); err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(g.dst, data) || g.total != 300 || g.from != pb.Tier_TIER_NVME || g.layout.GetTokens() != 5 {
				t.Fatalf("piece %d: decoded %d bytes, total %d, from %v, layout %v", piece, len(g.dst), g.total, g.from, g.layout)
			}
		}
	}
	if err := c.Unmarshal(pieces(first[:10], 4), &getChunk{}); err == nil {
		t.Error("a truncated message decoded")
	}
}

// FuzzGetDecode: any bytes decode or fail, never panic.
func FuzzGetDecode(f *testing.F) {
	b, _ := proto.Marshal(&pb.GetResponse{Layout: &pb.Layout{Dtype: 1}, TotalBytes: 10, Data: []byte("0123456789")})
	f.Add(b, uint8(2))
	f.Add([]byte{0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, uint8(0))
	c := getWire{protoWire}
	preallocLimit = 1 << 20 // huge total_bytes values would make every execution slow
	f.Fuzz(func(t *testing.T, b []byte, piece uint8) {
		g := getChunk{}
		_ = c.Unmarshal(pieces(b, int(piece)+1), &g)
		if uint64(len(g.dst)) > uint64(len(b)) {
			t.Fatalf("decoded %d data bytes from a %d-byte message", len(g.dst), len(b))
		}
	})
}
