package prefixhash

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"testing"

	"github.com/zeebo/xxh3"
)

var update = flag.Bool("update", false, "rewrite testdata/xxh3-block-hashes.jsonl from the current implementation")

const xxh3Golden = "testdata/xxh3-block-hashes.jsonl"

// refXXH3 is the xxh3 mode written out from the encoding in doc.go, field by
// field, without sharing code with Hasher.
func refXXH3(seed string, bt int, lora, salt string, tokens []uint32) (root string, hashes []string) {
	r := xxh3.Hash128([]byte(seed)).Bytes()
	parent := r[:]
	for i := 0; (i+1)*bt <= len(tokens); i++ {
		var b bytes.Buffer
		b.Write(parent)
		binary.Write(&b, binary.LittleEndian, uint32(bt))
		binary.Write(&b, binary.LittleEndian, tokens[i*bt:(i+1)*bt])
		var flags byte
		if lora != "" {
			flags |= 1
		}
		if i == 0 && salt != "" {
			flags |= 2
		}
		b.WriteByte(flags)
		for _, s := range []struct {
			on bool
			v  string
		}{{flags&1 != 0, lora}, {flags&2 != 0, salt}} {
			if s.on {
				binary.Write(&b, binary.LittleEndian, uint32(len(s.v)))
				b.WriteString(s.v)
			}
		}
		d := xxh3.Hash128(b.Bytes())
		digest := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, d.Hi), d.Lo)
		hashes = append(hashes, hex.EncodeToString(digest))
		parent = digest
	}
	return hex.EncodeToString(r[:]), hashes
}

// TestXXH3Literal spells out block 0's hash input byte by byte for a tiny case.
func TestXXH3Literal(t *testing.T) {
	h, err := NewHasher(Params{Algo: XXH3, Seed: "s", BlockTokens: 2, LoRA: "L", CacheSalt: "SS"})
	if err != nil {
		t.Fatal(err)
	}
	root := xxh3.HashString128("s").Bytes()
	if h.Root().String() != hex.EncodeToString(root[:]) {
		t.Fatalf("root = %s, want XXH3-128(\"s\") = %x", h.Root(), root)
	}
	tail := []string{
		"02000000",       // n = 2
		"01000000",       // token 1
		"04030201",       // token 0x01020304
		"03",             // flags: LoRA, cache salt
		"01000000", "4c", // LoRA "L"
		"02000000", "5353", // cache salt "SS"
	}
	in := hex.EncodeToString(root[:])
	for _, s := range tail {
		in += s
	}
	b, _ := hex.DecodeString(in)
	d := xxh3.Hash128(b).Bytes()
	got, err := h.Block(h.Root(), 0, []uint32{1, 0x01020304})
	if err != nil {
		t.Fatal(err)
	}
	if got.String() != hex.EncodeToString(d[:]) {
		t.Errorf("block 0 = %s, want XXH3-128(%s) = %x", got, in, d)
	}
	// Block 1: the salt is gone, so flags = 1 and the field ends after the LoRA.
	b1, _ := hex.DecodeString(got.String() + "02000000" + "05000000" + "06000000" + "01" + "01000000" + "4c")
	d1 := xxh3.Hash128(b1).Bytes()
	got1, err := h.Block(got, 1, []uint32{5, 6})
	if err != nil {
		t.Fatal(err)
	}
	if got1.String() != hex.EncodeToString(d1[:]) {
		t.Errorf("block 1 = %s, want %x", got1, d1)
	}
}

// xxh3Cases are the parameter sets of the golden file.
func xxh3Cases() []vector {
	str := func(s string) *string { return &s }
	var vs []vector
	r := rand.New(rand.NewPCG(42, 42))
	for _, seed := range []string{"0", DefaultSeed, ""} {
		for _, bt := range []int{16, 32} {
			for _, ex := range []struct{ lora, salt *string }{{nil, nil}, {str("adapter-7"), nil}, {nil, str("tenant-a")}, {str("adapter-7"), str("tenant-a")}} {
				toks := make([]uint32, 3*bt+bt/2)
				for i := range toks {
					toks[i] = r.Uint32N(1 << 17)
				}
				vs = append(vs, vector{Algo: "xxh3", Seed: seed, BlockTokens: bt, LoRA: ex.lora, CacheSalt: ex.salt, Tokens: toks})
			}
		}
	}
	return vs
}

// TestXXH3Golden checks the xxh3 mode against the encoding in doc.go
// (refXXH3) and against testdata/xxh3-block-hashes.jsonl, which pins the
// format so that a change to it cannot pass unnoticed (-update rewrites it).
func TestXXH3Golden(t *testing.T) {
	if *update {
		var out bytes.Buffer
		for _, v := range xxh3Cases() {
			p := v.params(t)
			h, err := NewHasher(p)
			if err != nil {
				t.Fatal(err)
			}
			c, err := h.AppendChain(nil, v.Tokens)
			if err != nil {
				t.Fatal(err)
			}
			v.SeedHash = h.Root().String()
			v.Hashes, v.EventIDs, v.Extras = nil, nil, nil
			for i, d := range c {
				v.Hashes = append(v.Hashes, d.String())
				v.EventIDs = append(v.EventIDs, d.EventID())
				v.Extras = append(v.Extras, p.extras(i))
			}
			line, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			out.Write(line)
			out.WriteByte('\n')
		}
		if err := os.WriteFile(xxh3Golden, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	vs := loadVectors(t, xxh3Golden)
	if len(vs) != len(xxh3Cases()) {
		t.Fatalf("%s has %d vectors, want %d", xxh3Golden, len(vs), len(xxh3Cases()))
	}
	for i, v := range vs {
		t.Run(fmt.Sprintf("%02d/seed=%q/bt=%d/lora=%t/salt=%t", i+1, v.Seed, v.BlockTokens, v.LoRA != nil, v.CacheSalt != nil), func(t *testing.T) {
			p := v.params(t)
			root, want := refXXH3(p.Seed, p.BlockTokens, p.LoRA, p.CacheSalt, v.Tokens)
			if root != v.SeedHash || !slices.Equal(want, v.Hashes) {
				t.Fatalf("golden file disagrees with the encoding in doc.go")
			}
			h, err := NewHasher(p)
			if err != nil {
				t.Fatal(err)
			}
			if h.Root().String() != root {
				t.Errorf("root = %s, want %s", h.Root(), root)
			}
			c, err := h.AppendChain(nil, v.Tokens)
			if err != nil {
				t.Fatal(err)
			}
			if len(c) != len(want) {
				t.Fatalf("%d digests, want %d", len(c), len(want))
			}
			for i, d := range c {
				if d.String() != want[i] || d.EventID() != v.EventIDs[i] {
					t.Errorf("block %d = %s (event id %d), want %s (%d)", i, d, d.EventID(), want[i], v.EventIDs[i])
				}
			}
		})
	}
}
