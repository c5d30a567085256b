package client

import (
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// lookupCodec is the proto codec for Lookup calls, except that the request
// is encoded into a buffer from requestPool, which does not clear it first:
// the base codec takes one from gRPC's pool, rounded up to the pool's next
// size (1 MiB for the 128 KiB request of an 8192-block chain), and clears
// all of it. Its name is "proto", so the wire is unchanged.
type lookupCodec struct{}

// lookupCall makes a call use lookupCodec.
var lookupCall = grpc.ForceCodecV2(lookupCodec{})

func (lookupCodec) Name() string { return protoCodec.Name() }

func (lookupCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return protoCodec.Marshal(v)
	}
	size := proto.Size(m)
	if mem.IsBelowBufferPoolingThreshold(size) {
		return protoCodec.Marshal(v)
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

func (lookupCodec) Unmarshal(data mem.BufferSlice, v any) error { return protoCodec.Unmarshal(data, v) }

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
