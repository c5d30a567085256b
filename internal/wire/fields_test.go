package wire_test

import (
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/kvtier/kvtier/internal/wire"
	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
)

// TestFieldNumbers checks every field number the hand-written wire code uses
// against the generated descriptors: number and kind.
func TestFieldNumbers(t *testing.T) {
	cases := []struct {
		num     protowire.Number
		message protoreflect.Message
		field   protoreflect.Name
		kind    protoreflect.Kind
		list    bool
	}{
		{wire.PutRequestHeader, (&pb.PutRequest{}).ProtoReflect(), "header", protoreflect.MessageKind, false},
		{wire.PutRequestData, (&pb.PutRequest{}).ProtoReflect(), "data", protoreflect.BytesKind, false},
		{wire.GetResponseLayout, (&pb.GetResponse{}).ProtoReflect(), "layout", protoreflect.MessageKind, false},
		{wire.GetResponseFrom, (&pb.GetResponse{}).ProtoReflect(), "from", protoreflect.EnumKind, false},
		{wire.GetResponseTotalBytes, (&pb.GetResponse{}).ProtoReflect(), "total_bytes", protoreflect.Uint64Kind, false},
		{wire.GetResponseData, (&pb.GetResponse{}).ProtoReflect(), "data", protoreflect.BytesKind, false},
		{wire.LookupRequestPackedHashes, (&pb.LookupRequest{}).ProtoReflect(), "packed_hashes", protoreflect.BytesKind, false},
		{wire.LookupResponseCachedBlocks, (&pb.LookupResponse{}).ProtoReflect(), "cached_blocks", protoreflect.Uint32Kind, false},
		{wire.LookupResponseTotalBlocks, (&pb.LookupResponse{}).ProtoReflect(), "total_blocks", protoreflect.Uint32Kind, false},
		{wire.LookupResponseTiers, (&pb.LookupResponse{}).ProtoReflect(), "tiers", protoreflect.EnumKind, true},
	}
	for _, c := range cases {
		md := c.message.Descriptor()
		t.Run(string(md.Name())+"."+string(c.field), func(t *testing.T) {
			fd := md.Fields().ByName(c.field)
			switch {
			case fd == nil:
				t.Fatalf("%s has no field %s", md.FullName(), c.field)
			case fd.Number() != c.num:
				t.Errorf("%s is field %d in the proto, %d in internal/wire", fd.FullName(), fd.Number(), c.num)
			case fd.Kind() != c.kind || fd.IsList() != c.list:
				t.Errorf("%s is %v (list %v) in the proto; the wire code expects %v (list %v)", fd.FullName(), fd.Kind(), fd.IsList(), c.kind, c.list)
			case fd.IsList() && !fd.IsPacked():
				t.Errorf("%s is not packed; the wire code writes it packed", fd.FullName())
			}
		})
	}
}
