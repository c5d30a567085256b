package daemon

import (
	"context"
	"encoding/binary"
	"io"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/kvtier/kvtier/internal/wire"
	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
)

// Lookup's messages on the wire. A long chain's LookupRequest is almost all
// packed_hashes (128 KiB for 8192 blocks), and its LookupResponse almost all
// tiers, one byte per block. The base marshaler would materialize the request in
// a pooled buffer (cleared first, 1 MiB for a 128 KiB request), copy
// packed_hashes out of it again, and encode tiers in two passes through
// proto's generic code; these do one copy and one pass.

// minDecodedLookup is the smallest request decodeLookupRequest takes: a
// smaller one, a chain of under a thousand blocks, gains little from it. A
// variable so that tests can decode small messages.
var minDecodedLookup = 16 << 10

// decodeLookupRequest decodes m from gRPC's receive buffers, copying
// packed_hashes straight into a buffer from packedPool; the other fields, a
// few bytes, are gathered as received and decoded by proto.Unmarshal. It
// returns false for a request under minDecodedLookup bytes, and on
// anything it does not expect (a malformed varint, a group, an invalid
// field number), leaving the message to the base marshaler and its errors.
func decodeLookupRequest(data mem.BufferSlice, m *pb.LookupRequest) bool {
	if data.Len() < minDecodedLookup {
		return false
	}
	r := data.Reader()
	defer r.Close()
	var (
		packed     []byte
		havePacked bool
	)
	tee := &teeReader{r: r, dst: make([]byte, 0, 64)} // reads varints into tee.dst as well
	for r.Remaining() > 0 {
		mark := len(tee.dst)
		tag, ok := readUvarint(tee)
		if !ok || tag>>3 < uint64(protowire.MinValidNumber) || tag>>3 > uint64(protowire.MaxValidNumber) {
			return false
		}
		var n uint64 // bytes of value to copy
		switch protowire.Type(tag & 7) {
		case protowire.VarintType:
			if _, ok := readUvarint(tee); !ok {
				return false
			}
		case protowire.Fixed32Type:
			n = 4
		case protowire.Fixed64Type:
			n = 8
		case protowire.BytesType:
			if n, ok = readUvarint(tee); !ok {
				return false
			}
			if protowire.Number(tag>>3) == wire.LookupRequestPackedHashes && n <= uint64(r.Remaining()) {
				tee.dst = tee.dst[:mark]
				putPacked(packed) // a repeated field: the last one wins, as in proto
				packed, havePacked = getPacked(int(n)), true
				if _, err := io.ReadFull(r, packed); err != nil {
					return false
				}
				continue
			}
		default:
			return false
		}
		if n > uint64(r.Remaining()) {
			return false
		}
		rest := append(tee.dst, make([]byte, n)...)
		if _, err := io.ReadFull(r, rest[len(rest)-int(n):]); err != nil {
			return false
		}
		tee.dst = rest
	}
	if err := proto.Unmarshal(tee.dst, m); err != nil {
		putPacked(packed)
		return false
	}
	if havePacked {
		m.PackedHashes = packed
	}
	return true
}

// lookupResponseSize returns the encoded size of r and of its tiers
// field's contents. It returns false for a response with hashes (token-id
// chains that ask for them, rare) or unknown fields, which the base marshaler
// encodes.
func lookupResponseSize(r *pb.LookupResponse) (size, tiersSize int, ok bool) {
	if len(r.GetHashes()) > 0 || len(r.ProtoReflect().GetUnknown()) > 0 {
		return 0, 0, false
	}
	tiers := r.GetTiers()
	tiersSize = len(tiers) // a byte each, but for values from 0x80 up (none today)
	for _, t := range tiers {
		if uint32(t) >= 0x80 {
			tiersSize += protowire.SizeVarint(uint64(int64(t))) - 1 // enums are int32s, sign-extended on the wire
		}
	}
	if v := r.GetCachedBlocks(); v != 0 {
		size += 1 + protowire.SizeVarint(uint64(v))
	}
	if v := r.GetTotalBlocks(); v != 0 {
		size += 1 + protowire.SizeVarint(uint64(v))
	}
	if len(tiers) > 0 {
		size += 1 + protowire.SizeVarint(uint64(tiersSize)) + tiersSize
	}
	return size, tiersSize, true
}

// appendLookupResponse appends r, encoded as proto.Marshal would, to b;
// tiersSize is from lookupResponseSize, which must have accepted r.
func appendLookupResponse(b []byte, r *pb.LookupResponse, tiersSize int) []byte {
	if v := r.GetCachedBlocks(); v != 0 {
		b = protowire.AppendVarint(protowire.AppendTag(b, wire.LookupResponseCachedBlocks, protowire.VarintType), uint64(v))
	}
	if v := r.GetTotalBlocks(); v != 0 {
		b = protowire.AppendVarint(protowire.AppendTag(b, wire.LookupResponseTotalBlocks, protowire.VarintType), uint64(v))
	}
	if tiers := r.GetTiers(); len(tiers) > 0 {
		b = protowire.AppendVarint(protowire.AppendTag(b, wire.LookupResponseTiers, protowire.BytesType), uint64(tiersSize))
		for _, t := range tiers {
			if uint32(t) < 0x80 {
				b = append(b, byte(t))
			} else {
				b = protowire.AppendVarint(b, uint64(int64(t)))
			}
		}
	}
	return b
}

// encodeLookupResponse encodes r in one pass, into a buffer from gRPC's
// pool, or returns false where lookupResponseSize does.
func encodeLookupResponse(r *pb.LookupResponse) (mem.BufferSlice, bool) {
	size, tiersSize, ok := lookupResponseSize(r)
	if !ok {
		return nil, false
	}
	if mem.IsBelowBufferPoolingThreshold(size) {
		return mem.BufferSlice{mem.SliceBuffer(appendLookupResponse(make([]byte, 0, size), r, tiersSize))}, true
	}
	pool := mem.DefaultBufferPool()
	buf := pool.Get(size)
	*buf = appendLookupResponse((*buf)[:0], r, tiersSize)
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, true
}

// packedPool recycles the buffers decodeLookupRequest copies packed_hashes
// into: a long chain's request is the largest allocation of a call, and
// with many clients the collector ran mostly for them. A buffer goes back
// once the call's handler has returned (recycleLookupRequest); one that
// never does is simply collected.
var packedPool sync.Pool // of *[]byte

// maxPooledPacked bounds the buffers kept: 1 MiB, 65536 blocks of 16 bytes.
const maxPooledPacked = 1 << 20

// getPacked returns a buffer of n bytes, its contents undefined.
func getPacked(n int) []byte {
	if n <= maxPooledPacked {
		if p, _ := packedPool.Get().(*[]byte); p != nil && cap(*p) >= n {
			return (*p)[:n]
		}
	}
	return make([]byte, n)
}

// putPacked recycles b, which nothing may use afterwards.
func putPacked(b []byte) {
	if cap(b) > 0 && cap(b) <= maxPooledPacked {
		p := new([]byte)
		*p = b
		packedPool.Put(p)
	}
}

// tiersPool recycles LookupResponse.tiers, 4 bytes a block (32 KiB for an
// 8192-block chain): Lookup takes the slice from it and the server's marshaler
// puts it back once the response is encoded (recycleLookupTiers).
var tiersPool sync.Pool // of *[]pb.Tier

// maxPooledTiers bounds the slices kept: 256 KiB, 65536 blocks.
const maxPooledTiers = 1 << 16

// getTiers returns a slice of n tiers, its contents undefined.
func getTiers(n int) []pb.Tier {
	if n <= maxPooledTiers {
		if p, _ := tiersPool.Get().(*[]pb.Tier); p != nil && cap(*p) >= n {
			return (*p)[:n]
		}
	}
	return make([]pb.Tier, n)
}

// recycleLookupTiers takes r's tiers for reuse once r is encoded: a
// response the server's marshaler encodes is the call's alone and nothing reads
// it afterwards (the server installs no stats handler that would keep it).
// Lookups made in process never reach the marshaler; their slices are simply
// collected.
func recycleLookupTiers(r *pb.LookupResponse) {
	t := r.Tiers
	r.Tiers = nil
	if cap(t) > 0 && cap(t) <= maxPooledTiers {
		p := new([]pb.Tier)
		*p = t
		tiersPool.Put(p)
	}
}

// recycleLookupRequest is a unary interceptor that recycles a Lookup
// request's packed_hashes once the handler has returned: every request
// that reaches it was decoded by the server's marshaler, so the buffer belongs
// to the call alone (from packedPool, or from proto when the base marshaler
// decoded it), and Lookup keeps no reference to it, nor does its response.
// Calls to Server.Lookup made in process do not come this way.
func recycleLookupRequest(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	r, ok := req.(*pb.LookupRequest)
	if !ok {
		return h(ctx, req)
	}
	defer putPacked(r.GetPackedHashes())
	return h(ctx, req)
}

// readUvarint reads a protobuf varint and reports whether it was well formed.
func readUvarint(r io.ByteReader) (uint64, bool) {
	x, err := binary.ReadUvarint(r)
	return x, err == nil
}

// teeReader reads bytes from r and appends each to dst.
type teeReader struct {
	r   io.ByteReader
	dst []byte
}

func (t *teeReader) ReadByte() (byte, error) {
	c, err := t.r.ReadByte()
	if err == nil {
		t.dst = append(t.dst, c)
	}
	return c, err
}
