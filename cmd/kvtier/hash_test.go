package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/kvtier/kvtier/tiers/prefixhash"
)

// Two lines of tiers/prefixhash/testdata/vllm-block-hashes.jsonl: 100 tokens,
// 16 per block, so 6 digests and a partial block of 4 that is not hashed.
const (
	vecSHA256Tokens = "87432,36782,18706,56514,48688,84941,45730,122209,98385,50293,53921,57173,48240,126587,71958,120962,26993,25642,8557,18982,31195,31452,2732,31592,87747,51586,59868,102825,80825,57774,74416,12500,7102,22585,106833,107543,107331,69111,994,5809,56385,111996,102986,36501,54453,17405,112693,30892,91121,101137,86590,49067,118720,54359,102099,44805,76672,97974,6199,66363,59568,16937,90274,120529,68571,47717,76642,7872,45790,15365,110256,112968,32170,83319,83825,16324,57246,124628,19495,105538,2500,47896,17028,19721,37776,3244,61913,83608,3508,63318,8799,98331,104387,77283,56493,12039,61576,71316,78996,65707"
	vecSHA256Hashes = `8330fe67361f10e8b9a5d3ebd43d64989b7ac0680e21c2506ef44c877829c8ad
e3df49e3c25423e81ded2f10f3b5bdbdcb8f8690c6ae1374a7b7f805b6319e74
089a5ae912c008f9ecf4c038727108825b50326667e52100c36aafca0ca6b318
318566a54052a2b4d9b179d23a73e838fcd5df68642c1d3170d2122b08d6f110
d1eab624d86650e5c8c16648c51caff3f4fb6b2a87e6f2a2c5e6c72eb083bcdb
45125acf80633183753c8b3529a9c8704ca87b3f30e00aa1b98008ba0941a5b5
`
	vecXXHashTokens = "67042,5403,52553,33621,25147,41254,26398,97034,14652,80338,21921,55127,55269,74163,33149,79567,95054,16925,12163,33816,31421,92062,126050,36624,74786,114656,24105,59398,107637,55787,2216,18945,40015,66880,18158,18616,53936,4800,61227,66508,120080,98293,64954,111958,117861,67853,125569,95111,5858,50715,13894,90347,106230,96021,38549,54184,60733,14082,85826,69787,56001,106489,113608,53796,3493,112766,34405,78746,8108,38190,33996,42638,66318,3761,18363,71284,7201,28612,41414,97156,12734,21483,39565,97490,54116,68103,102338,126198,18784,10396,127855,68617,64978,119324,127530,68284,8260,55808,47911,121051"
	vecXXHashHashes = `cdc96649c7bb362a4df2f1cbd2c27bbc
190e30502adf8cf9c2d67552cff11824
6f28be33831e4c43cb92388e5d38b908
443ae29e84ed46ec68be3977f0b68c23
72a374bcec8f009cdf62d9c58625c6a1
284b3d7ef5d47212aafc8459d5bea690
`
)

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// chainHex is the expected output for params p, from the library.
func chainHex(t *testing.T, p prefixhash.Params, tokens []uint32) string {
	t.Helper()
	c, err := prefixhash.Chain(p, tokens)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, h := range c {
		b.WriteString(h.String() + "\n")
	}
	return b.String()
}

func TestHashCommand(t *testing.T) {
	seq := make([]uint32, 40)
	for i := range seq {
		seq[i] = uint32(i * 1000)
	}
	parts := make([]string, len(seq))
	for i, v := range seq {
		parts[i] = strconv.FormatUint(uint64(v), 10)
	}
	seqCSV := strings.Join(parts, ",")
	defaults := prefixhash.Params{Algo: prefixhash.XXH3, Seed: prefixhash.DefaultSeed, BlockTokens: 16}
	withExtras := prefixhash.Params{Algo: prefixhash.XXH3, Seed: "s", BlockTokens: 8, LoRA: "l", CacheSalt: "c"}

	tests := []struct {
		name string
		args func(t *testing.T) []string
		want string
	}{
		{
			name: "vllm sha256_cbor vector, default seed",
			args: func(*testing.T) []string {
				return []string{"--algo", "sha256_cbor", "--lora", "adapter-7", "--cache-salt", "tenant-a", "--tokens", vecSHA256Tokens}
			},
			want: vecSHA256Hashes,
		},
		{
			name: "vllm xxhash_cbor vector from a file",
			args: func(t *testing.T) []string {
				f := writeFile(t, strings.ReplaceAll(vecXXHashTokens, ",", ",\n "))
				return []string{"-algo=xxhash_cbor", "-seed=0", "-block-tokens=16", "-cache-salt=tenant-a", "-tokens-file=" + f}
			},
			want: vecXXHashHashes,
		},
		{
			name: "vllm sha256_cbor vector from a JSON array",
			args: func(t *testing.T) []string {
				f := writeFile(t, "[ "+strings.ReplaceAll(vecSHA256Tokens, ",", ", ")+" ]\n")
				return []string{"--algo", "sha256_cbor", "--seed", prefixhash.DefaultSeed, "--lora", "adapter-7", "--cache-salt", "tenant-a", "--tokens-file", f}
			},
			want: vecSHA256Hashes,
		},
		{
			name: "defaults are xxh3, vllm-none-hash, 16 tokens",
			args: func(*testing.T) []string { return []string{"--tokens", seqCSV} },
			want: chainHex(t, defaults, seq),
		},
		{
			name: "xxh3 with extras, whitespace separated",
			args: func(t *testing.T) []string {
				return []string{"--seed", "s", "--block-tokens", "8", "--lora", "l", "--cache-salt", "c", "--tokens", strings.ReplaceAll(seqCSV, ",", " \t")}
			},
			want: chainHex(t, withExtras, seq),
		},
		{
			name: "partial block only",
			args: func(*testing.T) []string { return []string{"--tokens", "1,2,3"} },
			want: "",
		},
		{
			name: "empty token list",
			args: func(*testing.T) []string { return []string{"--tokens", ""} },
			want: "",
		},
		{
			name: "empty file",
			args: func(t *testing.T) []string { return []string{"--tokens-file", writeFile(t, "\n")} },
			want: "",
		},
		{
			name: "help",
			args: func(*testing.T) []string { return []string{"-h"} },
			want: "",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(append([]string{"hash"}, tc.args(t)...), &out, &errb)
			if code != 0 {
				t.Fatalf("exit %d, stderr: %s", code, errb.String())
			}
			if out.String() != tc.want {
				t.Errorf("stdout:\n%s\nwant:\n%s", out.String(), tc.want)
			}
		})
	}
}

func TestHashCommandUsageErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	tests := []struct {
		name string
		args func(t *testing.T) []string
		// stderr must contain this
		want string
	}{
		{"non-integer token", func(*testing.T) []string { return []string{"--tokens", "1,a,3"} }, `"a"`},
		{"negative token", func(*testing.T) []string { return []string{"--tokens", "1,-2,3"} }, `"-2"`},
		{"fractional token", func(*testing.T) []string { return []string{"--tokens", "1.5"} }, `"1.5"`},
		{"token over uint32", func(*testing.T) []string { return []string{"--tokens", "4294967296"} }, "4294967296"},
		{"empty field", func(*testing.T) []string { return []string{"--tokens", "1,,2"} }, "empty field"},
		{"comma and space empty field", func(*testing.T) []string { return []string{"--tokens", "1, ,2"} }, "empty field"},
		{"leading comma", func(*testing.T) []string { return []string{"--tokens", ",1"} }, "empty field"},
		{"trailing comma", func(*testing.T) []string { return []string{"--tokens", "1,2,"} }, "trailing comma"},
		{"unclosed bracket", func(*testing.T) []string { return []string{"--tokens", "[1,2"} }, "]"},
		{"nested array", func(*testing.T) []string { return []string{"--tokens", "[1,[2]]"} }, `"[2]"`},
		{"zero block tokens", func(*testing.T) []string { return []string{"--block-tokens", "0", "--tokens", "1"} }, "block tokens"},
		{"negative block tokens", func(*testing.T) []string { return []string{"--block-tokens", "-4", "--tokens", "1"} }, "block tokens"},
		{"non-integer block tokens", func(*testing.T) []string { return []string{"--block-tokens", "x", "--tokens", "1"} }, "block-tokens"},
		{"unknown algo", func(*testing.T) []string { return []string{"--algo", "md5", "--tokens", "1"} }, "md5"},
		{"lora not utf-8", func(*testing.T) []string { return []string{"--lora", "\xff", "--tokens", "1"} }, "lora"},
		{"both token sources", func(t *testing.T) []string {
			return []string{"--tokens", "1", "--tokens-file", writeFile(t, "1")}
		}, "exactly one"},
		{"no token source", func(*testing.T) []string { return []string{"--algo", "xxh3"} }, "exactly one"},
		{"missing file", func(*testing.T) []string { return []string{"--tokens-file", missing} }, "missing"},
		{"directory as file", func(t *testing.T) []string { return []string{"--tokens-file", t.TempDir()} }, "directory"},
		{"bad file content", func(t *testing.T) []string { return []string{"--tokens-file", writeFile(t, "1 2\nthree\n")} }, `"three"`},
		{"positional argument", func(*testing.T) []string { return []string{"--tokens", "1", "extra"} }, "extra"},
		{"unknown flag", func(*testing.T) []string { return []string{"--salt", "x", "--tokens", "1"} }, "salt"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(append([]string{"hash"}, tc.args(t)...), &out, &errb)
			if code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
			if out.Len() != 0 {
				t.Errorf("stdout not empty: %q", out.String())
			}
			if !strings.Contains(errb.String(), tc.want) {
				t.Errorf("stderr %q does not mention %q", errb.String(), tc.want)
			}
		})
	}
}

// FuzzParseTokens: parseTokens never panics, and what it accepts prints
// back (comma separated) to input it parses to the same tokens.
func FuzzParseTokens(f *testing.F) {
	for _, s := range []string{"", "1,2,3", " 1 2\n3 ", "[1, 2]", "1,,2", "-1", "4294967295", "4294967296", "[", "]", ",", "1\t,\n2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		toks, err := parseTokens(s)
		if err != nil {
			return
		}
		parts := make([]string, len(toks))
		for i, v := range toks {
			parts[i] = strconv.FormatUint(uint64(v), 10)
		}
		again, err := parseTokens(strings.Join(parts, ","))
		if err != nil || !slices.Equal(again, toks) {
			t.Fatalf("parse(%q) = %v; reparse of %q = %v, %v", s, toks, strings.Join(parts, ","), again, err)
		}
	})
}
