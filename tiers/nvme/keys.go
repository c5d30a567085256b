package nvme

import (
	"encoding/binary"
	"fmt"

	"github.com/kvtier/kvtier/codec"
)

// Badger key space. Every Badger key starts with one prefix byte:
//
//	0x00 "kvtier/nvme/format"        → formatVersion (ASCII digit), inline
//	0x01 binkey                      → codec frame, always in the value log
//	0x02 seq(u64 BE) binkey          → meta (metaLen bytes), inline in the LSM tree
//	0x7f "flush"                     → sentinel written and dropped to flush memtables
//
// binkey is tiers.Key.AppendBinary. The meta key carries the block's write
// sequence number so that iterating the 0x02 prefix visits blocks oldest
// write first; that is how Scan orders its output. Data and meta keys of
// one block are written and deleted in one Badger transaction.
const (
	prefixFormat = 0x00
	prefixData   = 0x01
	prefixMeta   = 0x02
	prefixFlush  = 0x7f

	formatVersion = '1'

	// userMetaFrame marks a data entry holding a codec frame (Badger's
	// per-entry UserMeta byte); other values are reserved for later formats.
	userMetaFrame = 1

	metaVersion = 1
	// metaLen is the length of a meta value: version u8, mode u8, layout
	// (12 bytes, as in the frame header), frame length u32 LE.
	metaLen = 18
	// metaKeyMin is the shortest meta key: prefix, seq, and a binary key of at
	// least 1+1+1+16+2 bytes.
	metaKeyMin = 1 + 8 + 21

	// valueThreshold is Badger's ValueThreshold: values of at least this many
	// bytes go to the value log. Frames are at least codec.HeaderLen+2 = 42
	// bytes and metas are 18, so 32 puts every frame in the value log and
	// every meta in the LSM tree.
	valueThreshold = 32
)

var formatKey = []byte("\x00kvtier/nvme/format")

// dataKey returns the Badger key of the frame of binkey bk.
func dataKey(bk []byte) []byte {
	k := make([]byte, 0, 1+len(bk))
	k = append(k, prefixData)
	return append(k, bk...)
}

// metaKey returns the Badger key of the meta of binkey bk written with seq.
func metaKey(seq uint64, bk []byte) []byte {
	k := make([]byte, 0, 9+len(bk))
	k = append(k, prefixMeta)
	k = binary.BigEndian.AppendUint64(k, seq)
	return append(k, bk...)
}

// parseMetaKey splits a meta key into its sequence number and binary key.
// The returned slice aliases key.
func parseMetaKey(key []byte) (seq uint64, bk []byte, err error) {
	if len(key) < metaKeyMin || key[0] != prefixMeta {
		return 0, nil, fmt.Errorf("%w: meta key of %d bytes", ErrFormat, len(key))
	}
	seq = binary.BigEndian.Uint64(key[1:9])
	if seq == 0 {
		return 0, nil, fmt.Errorf("%w: meta key with sequence number 0", ErrFormat)
	}
	return seq, key[9:], nil
}

// blockMeta is what the LSM tree records about a block besides its frame.
type blockMeta struct {
	mode     codec.Mode
	layout   codec.Layout
	frameLen uint32
}

func appendMeta(dst []byte, m blockMeta) []byte {
	dst = append(dst, metaVersion, byte(m.mode), byte(m.layout.DType), byte(m.layout.Order))
	dst = binary.LittleEndian.AppendUint16(dst, m.layout.Layers)
	dst = binary.LittleEndian.AppendUint16(dst, m.layout.KVHeads)
	dst = binary.LittleEndian.AppendUint16(dst, m.layout.HeadDim)
	dst = binary.LittleEndian.AppendUint32(dst, m.layout.Tokens)
	return binary.LittleEndian.AppendUint32(dst, m.frameLen)
}

// parseMeta decodes and validates a meta value. It never panics.
func parseMeta(b []byte) (blockMeta, error) {
	var m blockMeta
	if len(b) != metaLen {
		return m, fmt.Errorf("%w: meta of %d bytes, want %d", ErrFormat, len(b), metaLen)
	}
	if b[0] != metaVersion {
		return m, fmt.Errorf("%w: meta version %d", ErrFormat, b[0])
	}
	m.mode = codec.Mode(b[1])
	m.layout = codec.Layout{
		DType:   codec.DType(b[2]),
		Order:   codec.Order(b[3]),
		Layers:  binary.LittleEndian.Uint16(b[4:6]),
		KVHeads: binary.LittleEndian.Uint16(b[6:8]),
		HeadDim: binary.LittleEndian.Uint16(b[8:10]),
		Tokens:  binary.LittleEndian.Uint32(b[10:14]),
	}
	m.frameLen = binary.LittleEndian.Uint32(b[14:18])
	if err := m.layout.Validate(); err != nil {
		return m, fmt.Errorf("%w: meta layout: %w", ErrFormat, err)
	}
	if _, err := codec.ParseMode(m.mode.String()); err != nil {
		return m, fmt.Errorf("%w: meta mode %d", ErrFormat, b[1])
	}
	if m.frameLen < codec.HeaderLen {
		return m, fmt.Errorf("%w: meta frame length %d", ErrFormat, m.frameLen)
	}
	return m, nil
}
