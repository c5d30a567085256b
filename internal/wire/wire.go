package wire

import (
	"encoding/binary"
	"errors"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// ErrMalformed is a message that is not valid protobuf wire format, or
// that uses groups.
var ErrMalformed = errors.New("wire: malformed message")

// Next reads the next field from r. For a varint field, v is its value. For
// a bytes field, v is its length, at most r.Remaining(); its bytes are the
// next v bytes of r. The value of a fixed-width field is skipped (v is 0).
func Next(r *mem.Reader) (num protowire.Number, typ protowire.Type, v uint64, err error) {
	tag, err := binary.ReadUvarint(r)
	if err != nil {
		return 0, 0, 0, ErrMalformed
	}
	num, typ = protowire.Number(tag>>3), protowire.Type(tag&7)
	switch typ {
	case protowire.VarintType:
		if v, err = binary.ReadUvarint(r); err != nil {
			return 0, 0, 0, ErrMalformed
		}
	case protowire.BytesType:
		if v, err = binary.ReadUvarint(r); err != nil || v > uint64(r.Remaining()) {
			return 0, 0, 0, ErrMalformed
		}
	case protowire.Fixed32Type, protowire.Fixed64Type:
		n := 4
		if typ == protowire.Fixed64Type {
			n = 8
		}
		if _, err := r.Discard(n); err != nil {
			return 0, 0, 0, ErrMalformed
		}
	default:
		return 0, 0, 0, ErrMalformed
	}
	return num, typ, v, nil
}
