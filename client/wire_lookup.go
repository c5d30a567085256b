package client

import (
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/kvtier/kvtier/internal/wire"
	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
)

// lookupWire is gRPC's proto marshaler for Lookup calls, except that the request
// is encoded into a buffer from requestPool, which does not clear it first
// (the base marshaler takes one from gRPC's pool, rounded up to the pool's next
// size, 1 MiB for the 128 KiB request of an 8192-block chain, and clears
// all of it); and that a response is decoded into the tiers slice it
// already has (see LookupInto). Its name is "proto", so the wire is
// unchanged.
type lookupWire struct{}

// lookupCall makes a call use lookupWire.
var lookupCall = grpc.ForceCodecV2(lookupWire{})

func (lookupWire) Name() string { return protoWire.Name() }

func (lookupWire) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return protoWire.Marshal(v)
	}
	size := proto.Size(m)
	if mem.IsBelowBufferPoolingThreshold(size) {
		return protoWire.Marshal(v)
	}
	buf := requestPool.Get(size)
	b, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend((*buf)[:0], m)
	if err != nil {
		requestPool.Put(buf)
		return nil, err
	}
	*buf = b
	return mem.BufferSlice{mem.NewBuffer(buf, requestPool)}, nil
}

func (lookupWire) Unmarshal(data mem.BufferSlice, v any) error {
	r, ok := v.(*pb.LookupResponse)
	if !ok {
		return protoWire.Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	if decodeLookupResponse(buf.ReadOnlyData(), r) {
		return nil
	}
	return proto.Unmarshal(buf.ReadOnlyData(), r)
}

// decodeLookupResponse decodes b into r as proto.Unmarshal would, reusing
// r's tiers slice (proto's decoder allocates a new one for every packed
// field, 32 KiB for an 8192-block chain). It returns false, r then
// undefined, for anything but the common response: hashes (returned only
// when asked for), unknown fields or malformed bytes go to proto.Unmarshal.
func decodeLookupResponse(b []byte, r *pb.LookupResponse) bool {
	tiers := r.Tiers[:0]
	var cached, total uint64
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch {
		case (num == wire.LookupResponseCachedBlocks || num == wire.LookupResponseTotalBlocks) && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			if num == wire.LookupResponseCachedBlocks {
				cached = v
			} else {
				total = v
			}
		case num == wire.LookupResponseTiers && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			tiers = append(tiers, pb.Tier(int32(v)))
		case num == wire.LookupResponseTiers && typ == protowire.BytesType:
			p, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			for len(p) > 0 {
				if p[0] < 0x80 { // the common case: a one-byte varint
					tiers = append(tiers, pb.Tier(p[0]))
					p = p[1:]
					continue
				}
				v, n := protowire.ConsumeVarint(p)
				if n < 0 {
					return false
				}
				p = p[n:]
				tiers = append(tiers, pb.Tier(int32(v)))
			}
		default:
			return false
		}
	}
	proto.Reset(r)
	r.CachedBlocks, r.TotalBlocks = uint32(cached), uint32(total)
	r.Tiers = tiers // empty, not nil, keeps its room for the next call
	return true
}

// requestPool recycles Lookup request buffers, uncleared: Marshal writes
// every byte that is sent.
var requestPool = &dirtyPool{}

// dirtyPool is a mem.BufferPool that hands buffers out as they were left.
type dirtyPool struct {
	p sync.Pool // of *[]byte
}

func (d *dirtyPool) Get(n int) *[]byte {
	if b, _ := d.p.Get().(*[]byte); b != nil && cap(*b) >= n {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n)
	return &b
}

func (d *dirtyPool) Put(b *[]byte) { d.p.Put(b) }
