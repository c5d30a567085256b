// Package wire reads protobuf fields one at a time out of gRPC's receive
// buffers, for the gRPC marshalers that copy a message's bytes fields straight to
// where they belong (the client's Get chunks, the daemon's Put data)
// instead of unmarshalling them into a new slice.
//
// Next reads a field's header and leaves a bytes field's contents for the
// caller to read or discard; everything else about a field it handles
// itself. Any malformed input is ErrMalformed, and Next never reads past
// the message.
//
// fields.go holds, in one place, the kvtier.v1 field numbers that the
// hand-written marshalers use; a test checks them against the generated
// descriptors.
package wire
