package client

import (
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/kvtier/kvtier/internal/wire"
	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
)

// getWire is gRPC's proto marshaler, except that it decodes GetResponse messages
// received into a *getChunk by copying the data field straight from gRPC's
// receive buffers into the caller's buffer: no 1 MiB allocation and no
// intermediate copy per chunk. Its name is "proto", so the wire is unchanged.
type getWire struct{ base encoding.CodecV2 }

var protoWire = encoding.GetCodecV2(grpcproto.Name)

func (c getWire) Marshal(v any) (mem.BufferSlice, error) { return c.base.Marshal(v) }
func (c getWire) Name() string                           { return grpcproto.Name }

func (c getWire) Unmarshal(data mem.BufferSlice, v any) error {
	if g, ok := v.(*getChunk); ok {
		r := data.Reader()
		defer r.Close()
		return g.decode(r)
	}
	return c.base.Unmarshal(data, v)
}

// getChunk is one GetResponse, decoded into dst.
type getChunk struct {
	layout *pb.Layout
	from   pb.Tier
	total  uint64
	dst    []byte // the block so far; the chunk is appended
}

// preallocLimit bounds the buffer allocated on the word of total_bytes
// alone. A variable so the fuzz test can keep its executions cheap.
var preallocLimit uint64 = 64 << 20

var errBadGetResponse = errors.New("client: malformed GetResponse")

func (g *getChunk) decode(r *mem.Reader) error {
	for r.Remaining() > 0 {
		num, typ, v, err := wire.Next(r)
		if err != nil {
			return errBadGetResponse
		}
		switch {
		case typ == protowire.VarintType && num == wire.GetResponseFrom:
			g.from = pb.Tier(int32(v))
		case typ == protowire.VarintType && num == wire.GetResponseTotalBytes:
			g.total = v
			// Size the buffer for the block, trusting the daemon only up
			// to preallocLimit; data beyond that grows it as needed.
			if want := min(v, preallocLimit); uint64(cap(g.dst)) < want {
				nd := make([]byte, len(g.dst), want)
				copy(nd, g.dst)
				g.dst = nd
			}
		case typ == protowire.BytesType && num == wire.GetResponseData:
			off := len(g.dst)
			if uint64(cap(g.dst)-off) < v {
				nd := make([]byte, off, max(off+int(v), 2*cap(g.dst)))
				copy(nd, g.dst)
				g.dst = nd
			}
			g.dst = g.dst[:off+int(v)]
			if _, err := io.ReadFull(r, g.dst[off:]); err != nil {
				return errBadGetResponse
			}
		case typ == protowire.BytesType && num == wire.GetResponseLayout:
			b := make([]byte, v)
			if _, err := io.ReadFull(r, b); err != nil {
				return errBadGetResponse
			}
			g.layout = &pb.Layout{}
			if err := proto.Unmarshal(b, g.layout); err != nil {
				return fmt.Errorf("%w: layout: %v", errBadGetResponse, err)
			}
		case typ == protowire.BytesType:
			if _, err := r.Discard(int(v)); err != nil {
				return errBadGetResponse
			}
		}
	}
	return nil
}
