package daemon

import (
	"io"

	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/kvtier/kvtier/internal/wire"
	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
)

// gRPC calls what turns messages into bytes a codec (encoding.CodecV2); in
// kvtier "codec" means only the block quantizer, so these are the wire
// marshalers. Field numbers come from internal/wire, checked there against
// the generated descriptors.

// serverWire is gRPC's proto marshaler, except that a PutRequest received into a
// *putMsg has its data copied straight from gRPC's receive buffers into the
// block's DRAM reservation: no allocation and no intermediate copy per
// chunk; and that Lookup's messages, which for long chains are mostly one
// bytes field or one packed enum, are decoded and encoded in one pass (see
// wire_lookup.go). Its name is "proto", so the wire is unchanged.
type serverWire struct{ base encoding.CodecV2 }

func newServerWire() serverWire { return serverWire{encoding.GetCodecV2(grpcproto.Name)} }

func (c serverWire) Marshal(v any) (mem.BufferSlice, error) {
	if r, ok := v.(*pb.LookupResponse); ok {
		if data, ok := encodeLookupResponse(r); ok {
			recycleLookupTiers(r)
			return data, nil
		}
	}
	return c.base.Marshal(v)
}

func (c serverWire) Name() string { return grpcproto.Name }

func (c serverWire) Unmarshal(data mem.BufferSlice, v any) error {
	if m, ok := v.(*putMsg); ok {
		r := data.Reader()
		defer r.Close()
		m.decode(r)
		return nil // errors go to m.err, so they keep their own codes
	}
	if m, ok := v.(*pb.LookupRequest); ok && decodeLookupRequest(data, m) {
		return nil
	}
	return c.base.Unmarshal(data, v)
}

// putMsg receives the messages of one Put stream. For each message, decode
// parses the header (first message only) and calls onHeader, which makes
// the reservation that dst points into; data is then appended to dst.
type putMsg struct {
	onHeader func(*pb.PutHeader) ([]byte, error)
	first    bool   // the next message is the stream's first
	dst      []byte // the reservation's bytes
	n        int    // bytes written to dst
	err      error  // the first problem; decode does nothing once set
	sawData  bool
	// skip is set by onHeader when the block is already cached: data is
	// then counted against want and dropped, not stored.
	skip bool
	want int
}

// limit is the most data bytes the stream may carry.
func (m *putMsg) limit() int {
	if m.skip {
		return m.want
	}
	return len(m.dst)
}

var errMalformedPut = fieldErr("PutRequest", "malformed message")

func (m *putMsg) decode(r *mem.Reader) {
	first := m.first
	m.first = false
	var header *pb.PutHeader
	var early []byte // data that came before the header in the first message
	for r.Remaining() > 0 && m.err == nil {
		num, typ, n, err := wire.Next(r)
		if err != nil {
			m.err = errMalformedPut
			return
		}
		if typ != protowire.BytesType {
			continue
		}
		switch num {
		case wire.PutRequestHeader:
			if !first {
				m.err = fieldErr("header", "only allowed in the first message")
				return
			}
			b := make([]byte, n)
			if _, err := io.ReadFull(r, b); err != nil {
				m.err = errMalformedPut
				return
			}
			header = &pb.PutHeader{}
			if err := proto.Unmarshal(b, header); err != nil {
				m.err = fieldErr("header", "malformed: %v", err)
				return
			}
			if m.dst, m.err = m.onHeader(header); m.err != nil {
				return
			}
			if early != nil {
				m.write(early)
				early = nil
			}
		case wire.PutRequestData:
			m.sawData = true
			if n > MaxChunkBytes {
				m.err = fieldErr("data", "chunk of %d bytes exceeds %d", n, MaxChunkBytes)
				return
			}
			if m.dst == nil && !m.skip {
				if !first {
					m.err = fieldErr("header", "required in the first message")
					return
				}
				early = make([]byte, n) // rare: data before header in one message
				if _, err := io.ReadFull(r, early); err != nil {
					m.err = errMalformedPut
				}
				continue
			}
			if m.n+int(n) > m.limit() {
				m.err = fieldErr("data", "more than the %d bytes header.layout describes", m.limit())
				return
			}
			if m.skip {
				if _, err := r.Discard(int(n)); err != nil {
					m.err = errMalformedPut
					return
				}
				m.n += int(n)
				continue
			}
			if _, err := io.ReadFull(r, m.dst[m.n:m.n+int(n)]); err != nil {
				m.err = errMalformedPut
				return
			}
			m.n += int(n)
		default:
			if _, err := r.Discard(int(n)); err != nil {
				m.err = errMalformedPut
			}
		}
	}
	if m.err == nil && first && header == nil {
		m.err = fieldErr("header", "required in the first message")
	}
}

func (m *putMsg) write(b []byte) {
	if m.n+len(b) > m.limit() {
		m.err = fieldErr("data", "more than the %d bytes header.layout describes", m.limit())
		return
	}
	if m.skip {
		m.n += len(b)
		return
	}
	m.n += copy(m.dst[m.n:], b)
}
