package daemon

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/kvtier/kvtier/internal/wire"
	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
)

// marshalled is m's wire form, or the test fails.
func marshalled(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// decodeSmall lets decodeLookupRequest take messages of any size for the
// rest of the test.
func decodeSmall(t testing.TB) {
	old := minDecodedLookup
	minDecodedLookup = 0
	t.Cleanup(func() { minDecodedLookup = old })
}

func TestDecodeLookupRequest(t *testing.T) {
	small := marshalled(t, &pb.LookupRequest{Namespace: "m", PackedHashes: make([]byte, 64), HashSize: 16})
	if decodeLookupRequest(split(small, 1<<20), new(pb.LookupRequest)) {
		t.Fatal("decoded a small request: the base marshaler should")
	}
	decodeSmall(t)
	packed := bytes.Repeat([]byte{0xa5, 1, 2, 3}, 4*1024)
	full := &pb.LookupRequest{
		Namespace: "m/x", Layer: -1, PackedHashes: packed, HashSize: 16,
		Hashes: [][]byte{{1}, {2}}, TokenIds: []uint32{1, 2, 300}, ReturnHashes: true,
		HashParams: &pb.HashParams{Algo: pb.HashAlgo_HASH_ALGO_XXH3, BlockTokens: 16},
	}
	twice := append(marshalled(t, &pb.LookupRequest{PackedHashes: []byte("first")}), marshalled(t, &pb.LookupRequest{PackedHashes: []byte("second")})...)
	unknown := protowire.AppendBytes(protowire.AppendTag(marshalled(t, full), 99, protowire.BytesType), []byte("x"))
	unknown = protowire.AppendFixed32(protowire.AppendTag(unknown, 100, protowire.Fixed32Type), 7)
	unknown = protowire.AppendFixed64(protowire.AppendTag(unknown, 101, protowire.Fixed64Type), 8)
	for _, tc := range []struct {
		name string
		wire []byte
		ok   bool // decodeLookupRequest takes it (else the base marshaler does)
	}{
		{"empty", nil, true},
		{"packed only", marshalled(t, &pb.LookupRequest{Namespace: "m", PackedHashes: packed, HashSize: 16}), true},
		{"every field", marshalled(t, full), true},
		{"empty packed", protowire.AppendBytes(protowire.AppendTag(nil, wire.LookupRequestPackedHashes, protowire.BytesType), nil), true},
		{"packed twice: the last wins", twice, true},
		{"unknown fields", unknown, true},
		{"group", protowire.AppendTag(nil, 50, protowire.StartGroupType), false},
		{"field number 0", protowire.AppendVarint(protowire.AppendTag(nil, 0, protowire.VarintType), 1), false},
		{"field number too big", protowire.AppendVarint(protowire.AppendVarint(nil, uint64(1)<<35|uint64(wire.LookupRequestPackedHashes)<<3|2), 1), false},
		{"truncated varint", []byte{0x08, 0x80}, false},
		{"truncated packed", marshalled(t, &pb.LookupRequest{PackedHashes: packed})[:100], false},
		{"truncated fixed64", protowire.AppendTag(nil, 101, protowire.Fixed64Type), false},
		{"bad namespace utf-8", protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), []byte{0xff}), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var want pb.LookupRequest
			werr := proto.Unmarshal(tc.wire, &want)
			for _, piece := range []int{1, 7, 16 << 10} {
				var got pb.LookupRequest
				ok := decodeLookupRequest(split(tc.wire, piece), &got)
				if ok != tc.ok {
					t.Fatalf("pieces of %d: decoded = %v, want %v", piece, ok, tc.ok)
				}
				if !ok {
					continue
				}
				if werr != nil {
					t.Fatalf("decoded what proto.Unmarshal rejects (%v)", werr)
				}
				if !proto.Equal(&got, &want) {
					t.Fatalf("pieces of %d: decoded %v, proto.Unmarshal %v", piece, &got, &want)
				}
			}
		})
	}
}

// FuzzDecodeLookupRequest: whatever decodeLookupRequest accepts,
// proto.Unmarshal accepts too, with the same result.
func FuzzDecodeLookupRequest(f *testing.F) {
	f.Add(marshalled(f, &pb.LookupRequest{Namespace: "m", PackedHashes: make([]byte, 64), HashSize: 16}), 5)
	f.Add(marshalled(f, &pb.LookupRequest{Namespace: "m", TokenIds: []uint32{1, 2}, HashParams: &pb.HashParams{BlockTokens: 2}}), 3)
	f.Add([]byte{0x22, 0x80}, 1)
	decodeSmall(f)
	f.Fuzz(func(t *testing.T, wire []byte, piece int) {
		var got pb.LookupRequest
		if !decodeLookupRequest(split(wire, max(1, piece%64)), &got) {
			return
		}
		var want pb.LookupRequest
		if err := proto.Unmarshal(wire, &want); err != nil {
			t.Fatalf("decoded what proto.Unmarshal rejects: %v", err)
		}
		if !proto.Equal(&got, &want) {
			t.Fatalf("decoded %v, proto.Unmarshal %v", &got, &want)
		}
	})
}

func TestEncodeLookupResponse(t *testing.T) {
	many := make([]pb.Tier, 8192)
	for i := range many {
		many[i] = pb.Tier(i%3 + 1)
	}
	for _, tc := range []struct {
		name string
		resp *pb.LookupResponse
		ok   bool // encodeLookupResponse takes it (else the base marshaler does)
	}{
		{"empty", &pb.LookupResponse{}, true},
		{"nothing cached", &pb.LookupResponse{TotalBlocks: 12}, true},
		{"long", &pb.LookupResponse{CachedBlocks: 8192, TotalBlocks: 8200, Tiers: many}, true},
		{"largest counts", &pb.LookupResponse{CachedBlocks: 1<<32 - 1, TotalBlocks: 1<<32 - 1, Tiers: many[:3]}, true},
		{"odd enum values", &pb.LookupResponse{CachedBlocks: 3, Tiers: []pb.Tier{200, -1, 1 << 30}}, true},
		{"with hashes", &pb.LookupResponse{CachedBlocks: 1, TotalBlocks: 1, Tiers: many[:1], Hashes: [][]byte{{1}}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, ok := encodeLookupResponse(tc.resp)
			if ok != tc.ok {
				t.Fatalf("encoded = %v, want %v", ok, tc.ok)
			}
			if !ok {
				return
			}
			got := data.Materialize()
			data.Free()
			want, err := proto.MarshalOptions{Deterministic: true}.Marshal(tc.resp)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("encoded %x, proto.Marshal %x", got[:min(len(got), 32)], want[:min(len(want), 32)])
			}
		})
	}
	t.Run("unknown fields", func(t *testing.T) {
		var r pb.LookupResponse
		if err := proto.Unmarshal(protowire.AppendVarint(protowire.AppendTag(nil, 77, protowire.VarintType), 1), &r); err != nil {
			t.Fatal(err)
		}
		if _, ok := encodeLookupResponse(&r); ok {
			t.Fatal("encoded a response with unknown fields; the base marshaler must keep them")
		}
	})
}

// TestLookupTiersRecycled: the server's marshaler takes a response's tiers
// slice for reuse once it has encoded them, and the bytes it sent are
// unaffected by the slice's next user.
func TestLookupTiersRecycled(t *testing.T) {
	tiers := getTiers(4096)
	for i := range tiers {
		tiers[i] = pb.Tier(i%3 + 1)
	}
	resp := &pb.LookupResponse{CachedBlocks: 4096, TotalBlocks: 4096, Tiers: tiers}
	want, err := proto.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	data, err := newServerWire().Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	defer data.Free()
	if resp.Tiers != nil {
		t.Fatal("the marshaler left the tiers slice in the response")
	}
	for i := range tiers { // what the next Lookup that gets the slice may do
		tiers[i] = pb.Tier_TIER_UNSPECIFIED
	}
	if got := data.Materialize(); !bytes.Equal(got, want) {
		t.Fatal("the encoded response changed when its tiers slice was reused")
	}
}
