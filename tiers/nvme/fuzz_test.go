package nvme

import (
	"bytes"
	"testing"

	"github.com/kvtier/kvtier/codec"
)

func FuzzParseMeta(f *testing.F) {
	f.Add(appendMeta(nil, blockMeta{mode: codec.Raw, layout: testLayout(4), frameLen: 2088}))
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{0xff}, metaLen))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseMeta(b)
		if err != nil {
			return
		}
		if got := appendMeta(nil, m); !bytes.Equal(got, b) {
			t.Fatalf("meta %x re-encodes as %x", b, got)
		}
		if m.layout.Validate() != nil || m.frameLen < codec.HeaderLen {
			t.Fatalf("accepted invalid meta %+v", m)
		}
	})
}

func FuzzParseMetaKey(f *testing.F) {
	f.Add(metaKey(7, testKey("ns", 1).AppendBinary(nil)))
	f.Add([]byte{prefixMeta})
	f.Add([]byte{prefixData, 1, 2, 3})
	f.Fuzz(func(t *testing.T, key []byte) {
		seq, bk, err := parseMetaKey(key)
		if err != nil {
			return
		}
		if seq == 0 {
			t.Fatal("accepted sequence number 0")
		}
		if got := metaKey(seq, bk); !bytes.Equal(got, key) {
			t.Fatalf("key %x re-encodes as %x", key, got)
		}
	})
}

func FuzzEntryValue(f *testing.F) {
	f.Add([]byte{0, 0, 12, 3, 0, 1, 'k', 'e', 'y', 0, 0, 0, 0, 0, 0, 0, 0, 0xff - 5, 1, 2, 3, 1, 2, 3, 4}, uint64(5))
	f.Fuzz(func(t *testing.T, entry []byte, version uint64) {
		v, ok := entryValue(entry, []byte("\x01key"), version)
		if ok && len(v) > len(entry) {
			t.Fatalf("value of %d bytes from a %d-byte entry", len(v), len(entry))
		}
	})
}
