package daemon

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/kvtier/kvtier/codec"
	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
	"github.com/kvtier/kvtier/tiers"
	"github.com/kvtier/kvtier/tiers/prefixhash"
)

func TestLayoutFromProto(t *testing.T) {
	ok := func() *pb.Layout {
		return &pb.Layout{Dtype: pb.Dtype_DTYPE_BF16, Tokens: 16, KvHeads: 8, HeadDim: 128, Layers: 32}
	}
	for _, tc := range []struct {
		name  string
		mod   func(*pb.Layout) *pb.Layout
		field string // "" = valid
	}{
		{"valid", func(l *pb.Layout) *pb.Layout { return l }, ""},
		{"nil", func(*pb.Layout) *pb.Layout { return nil }, "layout"},
		{"no dtype", func(l *pb.Layout) *pb.Layout { l.Dtype = 0; return l }, "layout.dtype"},
		{"unknown dtype", func(l *pb.Layout) *pb.Layout { l.Dtype = 17; return l }, "layout.dtype"},
		{"unknown order", func(l *pb.Layout) *pb.Layout { l.Order = 9; return l }, "layout.order"},
		{"too many layers", func(l *pb.Layout) *pb.Layout { l.Layers = 1025; return l }, "layout.layers"},
		{"layers wrapping uint16", func(l *pb.Layout) *pb.Layout { l.Layers = 1<<16 + 1; return l }, "layout.layers"},
		{"no kv heads", func(l *pb.Layout) *pb.Layout { l.KvHeads = 0; return l }, "layout.kv_heads"},
		{"no head dim", func(l *pb.Layout) *pb.Layout { l.HeadDim = 0; return l }, "layout.head_dim"},
		{"too many tokens", func(l *pb.Layout) *pb.Layout { l.Tokens = 1<<16 + 1; return l }, "layout.tokens"},
		{"over 4 GiB", func(l *pb.Layout) *pb.Layout {
			l.Dtype, l.Layers, l.KvHeads, l.HeadDim, l.Tokens = pb.Dtype_DTYPE_FP32, 1024, 64, 128, 1024
			return l
		}, "layout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := layoutFromProto("layout", tc.mod(ok()))
			if tc.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				// No order given: kept unset (the codec treats it as separate).
				want := codec.Layout{DType: codec.BF16, Order: codec.KVUnspecified, Tokens: 16, KVHeads: 8, HeadDim: 128, Layers: 32}
				if l != want {
					t.Errorf("layout %v, want %v", l, want)
				}
				if back, err := layoutFromProto("x", layoutToProto(l)); err != nil || back != l {
					t.Errorf("round trip: %v %v", back, err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field || !errors.Is(err, tiers.ErrInvalid) {
				t.Errorf("error %v, want a FieldError for %q", err, tc.field)
			}
		})
	}
}

func TestAppendChain(t *testing.T) {
	h16 := make([]byte, 16)
	h16[0] = 1
	tokens := make([]uint32, 40)
	for i := range tokens {
		tokens[i] = uint32(i)
	}
	p := prefixhash.Params{Algo: prefixhash.SHA256CBOR, Seed: prefixhash.DefaultSeed, BlockTokens: 16}
	want, err := prefixhash.Chain(p, tokens)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		spec  chainSpec
		n     int
		field string
	}{
		{"empty", chainSpec{}, 0, ""},
		{"hashes", chainSpec{hashes: [][]byte{h16, h16, h16}}, 3, ""},
		{"hashes of 32 bytes", chainSpec{hashes: [][]byte{make([]byte, 32), make([]byte, 32)}}, 2, ""},
		{"hash sizes mixed", chainSpec{hashes: [][]byte{h16, h16, make([]byte, 32)}}, 0, "hashes[2]"},
		{"packed", chainSpec{packed: make([]byte, 64), hashSize: 32}, 2, ""},
		{"tokens", chainSpec{tokens: tokens, params: &pb.HashParams{Algo: pb.HashAlgo_HASH_ALGO_SHA256_CBOR, BlockTokens: 16}}, 2, ""},
		{"two forms", chainSpec{hashes: [][]byte{h16}, packed: h16, hashSize: 16}, 0, "hashes"},
		{"bad hash", chainSpec{hashes: [][]byte{h16, {1}}}, 0, "hashes[1]"},
		{"packed without size", chainSpec{packed: h16}, 0, "hash_size"},
		{"packed ragged", chainSpec{packed: make([]byte, 17), hashSize: 16}, 0, "packed_hashes"},
		{"tokens without params", chainSpec{tokens: tokens}, 0, "hash_params"},
		{"zero block tokens", chainSpec{tokens: tokens, params: &pb.HashParams{}}, 0, "hash_params.block_tokens"},
		{"bad algo", chainSpec{tokens: tokens, params: &pb.HashParams{Algo: 9, BlockTokens: 4}}, 0, "hash_params.algo"},
		{"bad utf-8 lora", chainSpec{tokens: tokens, params: &pb.HashParams{BlockTokens: 4, Lora: "\xff"}}, 0, "hash_params.lora"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := appendChain(nil, tc.spec)
			if tc.field != "" {
				var fe *FieldError
				if !errors.As(err, &fe) || fe.Field != tc.field {
					t.Fatalf("error %v, want a FieldError for %q", err, tc.field)
				}
				return
			}
			if err != nil || len(got) != tc.n {
				t.Fatalf("got %d hashes, %v; want %d", len(got), err, tc.n)
			}
			if tc.name == "tokens" && (got[0] != want[0] || got[1] != want[1]) {
				t.Errorf("token hashes differ from prefixhash.Chain")
			}
		})
	}
}

func TestKeyFromProto(t *testing.T) {
	for _, tc := range []struct {
		name  string
		k     *pb.Key
		field string
	}{
		{"valid", &pb.Key{Namespace: "llama-3.1/8b@lora:x", Hash: make([]byte, 32), Layer: -1}, ""},
		{"nil", nil, "key"},
		{"empty namespace", &pb.Key{Hash: make([]byte, 16)}, "key.namespace"},
		{"long namespace", &pb.Key{Namespace: strings.Repeat("x", 129), Hash: make([]byte, 16)}, "key.namespace"},
		{"bad namespace byte", &pb.Key{Namespace: "a\nb", Hash: make([]byte, 16)}, "key.namespace"},
		{"short hash", &pb.Key{Namespace: "n", Hash: make([]byte, 8)}, "key.hash"},
		{"layer low", &pb.Key{Namespace: "n", Hash: make([]byte, 16), Layer: -2}, "key.layer"},
		{"layer high", &pb.Key{Namespace: "n", Hash: make([]byte, 16), Layer: 1 << 20}, "key.layer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := keyFromProto("key", tc.k)
			if tc.field == "" {
				if err != nil || k.Validate() != nil {
					t.Fatalf("%v %v", err, k.Validate())
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Errorf("error %v, want a FieldError for %q", err, tc.field)
			}
		})
	}
}

// FuzzValidate feeds arbitrary bytes, decoded as each request message, to
// the validation functions: they must answer ok or a FieldError, never
// panic, and what they accept the store must accept too.
func FuzzValidate(f *testing.F) {
	seed := func(m proto.Message) {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	seed(&pb.PutHeader{Key: &pb.Key{Namespace: "ns", Hash: make([]byte, 16)}, Layout: &pb.Layout{Dtype: 1, Tokens: 1, KvHeads: 1, HeadDim: 1}})
	seed(&pb.LookupRequest{Namespace: "ns", Layer: 3, Hashes: [][]byte{make([]byte, 16)}})
	seed(&pb.LookupRequest{Namespace: "ns", TokenIds: []uint32{1, 2, 3, 4}, HashParams: &pb.HashParams{BlockTokens: 2}})
	seed(&pb.LookupRequest{Namespace: "ns", PackedHashes: make([]byte, 48), HashSize: 16})
	seed(&pb.RequestArrivedHint{RequestId: "r", Namespace: "n", Hashes: [][]byte{make([]byte, 32)}})
	f.Fuzz(func(t *testing.T, b []byte) {
		check := func(err error) {
			if err == nil {
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) || !errors.Is(err, tiers.ErrInvalid) {
				t.Fatalf("not a FieldError: %v", err)
			}
		}
		var h pb.PutHeader
		if proto.Unmarshal(b, &h) == nil {
			k, kerr := keyFromProto("header.key", h.GetKey())
			check(kerr)
			if kerr == nil && k.Validate() != nil {
				t.Fatalf("accepted key the store rejects: %v", k.Validate())
			}
			l, lerr := layoutFromProto("header.layout", h.GetLayout())
			check(lerr)
			if lerr == nil && l.Validate() != nil {
				t.Fatalf("accepted layout the codec rejects: %v", l.Validate())
			}
			_, perr := parentFromBytes("header.parent_hash", h.GetParentHash())
			check(perr)
		}
		var lr pb.LookupRequest
		if proto.Unmarshal(b, &lr) == nil {
			check(validateNamespace("namespace", lr.GetNamespace()))
			_, lerr := validateLayer("layer", lr.GetLayer())
			check(lerr)
			if len(lr.GetTokenIds()) > 1<<16 {
				return // keep hashing cheap
			}
			hs, err := appendChain(nil, chainSpec{
				hashes: lr.GetHashes(), packed: lr.GetPackedHashes(), hashSize: lr.GetHashSize(),
				tokens: lr.GetTokenIds(), params: lr.GetHashParams(), hasPacked: true,
			})
			check(err)
			for _, x := range hs {
				if x.Len() != 16 && x.Len() != 32 {
					t.Fatalf("accepted a %d-byte hash", x.Len())
				}
			}
		}
		var ra pb.RequestArrivedHint
		if proto.Unmarshal(b, &ra) == nil && len(ra.GetTokenIds()) <= 1<<16 {
			_, err := requestArrivedFromProto(&ra)
			check(err)
		}
	})
}

// FuzzValidatePinBlocks: any PinBlocks request is accepted or refused with
// a FieldError, never a panic, and an accepted one has one key per entry.
func FuzzValidatePinBlocks(f *testing.F) {
	for _, m := range []*pb.PinBlocksRequest{
		{Keys: []*pb.Key{{Namespace: "ns", Hash: make([]byte, 16)}}},
		{Keys: []*pb.Key{{Namespace: "ns", Hash: make([]byte, 32), Layer: 3}, {Namespace: "x", Hash: make([]byte, 16)}}, Promote: pb.Tier_TIER_DRAM},
		{Keys: []*pb.Key{nil}},
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var req pb.PinBlocksRequest
		if proto.Unmarshal(b, &req) != nil {
			return
		}
		a, err := validatePinBlocks(&req)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || !errors.Is(err, tiers.ErrInvalid) {
				t.Fatalf("not a FieldError: %v", err)
			}
			return
		}
		if len(a.keys) != len(req.GetKeys()) || len(a.keys) == 0 || len(a.keys) > MaxPinBlocksKeys {
			t.Fatalf("%d keys validated from %d", len(a.keys), len(req.GetKeys()))
		}
	})
}
