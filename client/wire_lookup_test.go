package client

import (
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/kvtier/kvtier/internal/wire"
	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
)

func TestDecodeLookupResponse(t *testing.T) {
	long := make([]pb.Tier, 8192)
	for i := range long {
		long[i] = pb.Tier(1 + i%3)
	}
	marshal := func(m *pb.LookupResponse) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// Tiers sent unpacked, one varint each, as an older encoder may.
	unpacked := protowire.AppendVarint(protowire.AppendTag(nil, wire.LookupResponseCachedBlocks, protowire.VarintType), 2)
	for _, v := range []uint64{1, 3} {
		unpacked = protowire.AppendVarint(protowire.AppendTag(unpacked, wire.LookupResponseTiers, protowire.VarintType), v)
	}
	// A tier past 0x7f (none exists today) takes a longer varint.
	wide := &pb.LookupResponse{CachedBlocks: 3, Tiers: []pb.Tier{1, 300, 2}}
	for _, tc := range []struct {
		name string
		wire []byte
		ok   bool // decodeLookupResponse takes it (else proto.Unmarshal does)
	}{
		{"empty", nil, true},
		{"nothing cached", marshal(&pb.LookupResponse{TotalBlocks: 5}), true},
		{"8192 blocks", marshal(&pb.LookupResponse{CachedBlocks: 8192, TotalBlocks: 9000, Tiers: long}), true},
		{"unpacked tiers", unpacked, true},
		{"wide tier", marshal(wide), true},
		{"with hashes", marshal(&pb.LookupResponse{CachedBlocks: 1, Tiers: []pb.Tier{1}, Hashes: [][]byte{make([]byte, 16)}}), false},
		{"truncated", marshal(&pb.LookupResponse{CachedBlocks: 8192, Tiers: long})[:100], false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var want pb.LookupResponse
			wantErr := proto.Unmarshal(tc.wire, &want)
			// Decode into a response that holds a longer answer already, as
			// a reused one does: nothing of it may survive.
			got := &pb.LookupResponse{CachedBlocks: 99, Tiers: append([]pb.Tier(nil), long...)}
			room := cap(got.Tiers)
			if ok := decodeLookupResponse(tc.wire, got); ok != tc.ok {
				t.Fatalf("decodeLookupResponse took it: %v, want %v", ok, tc.ok)
			}
			if !tc.ok {
				return
			}
			if wantErr != nil {
				t.Fatalf("decoded a message proto.Unmarshal refuses: %v", wantErr)
			}
			if !proto.Equal(got, &want) {
				t.Fatalf("decoded %d cached, %d tiers; proto.Unmarshal: %d, %d", got.CachedBlocks, len(got.Tiers), want.CachedBlocks, len(want.Tiers))
			}
			if len(want.Tiers) <= room && cap(got.Tiers) != room {
				t.Errorf("tiers slice reallocated: cap %d, was %d", cap(got.Tiers), room)
			}
		})
	}
}

// TestLookupWireUnmarshal: the marshaler answers like proto for what the fast
// path leaves to it.
func TestLookupWireUnmarshal(t *testing.T) {
	want := &pb.LookupResponse{CachedBlocks: 2, TotalBlocks: 4, Tiers: []pb.Tier{1, 2}, Hashes: [][]byte{{1}, {2}}}
	b, _ := proto.Marshal(want)
	for _, piece := range []int{1, 7, len(b)} {
		got := &pb.LookupResponse{Tiers: make([]pb.Tier, 10)}
		if err := (lookupWire{}).Unmarshal(pieces(b, piece), got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, want) {
			t.Fatalf("piece %d: got %v", piece, got)
		}
	}
	if err := (lookupWire{}).Unmarshal(pieces(b[:len(b)-1], 3), new(pb.LookupResponse)); err == nil {
		t.Error("a truncated response decoded")
	}
}

// FuzzDecodeLookupResponse: whatever decodeLookupResponse accepts,
// proto.Unmarshal accepts too and decodes to an equal message.
func FuzzDecodeLookupResponse(f *testing.F) {
	b, _ := proto.Marshal(&pb.LookupResponse{CachedBlocks: 3, TotalBlocks: 4, Tiers: []pb.Tier{1, 2, 300}})
	f.Add(b)
	f.Add([]byte{0x1a, 0x02, 0x80, 0x01})
	f.Add([]byte{0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		got := &pb.LookupResponse{CachedBlocks: 7, Tiers: []pb.Tier{3, 3, 3}}
		if !decodeLookupResponse(b, got) {
			return
		}
		var want pb.LookupResponse
		if err := proto.Unmarshal(b, &want); err != nil {
			t.Fatalf("decoded a message proto.Unmarshal refuses: %v", err)
		}
		if !proto.Equal(got, &want) {
			t.Fatalf("decoded %v, proto.Unmarshal %v", got, &want)
		}
	})
}
