package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/kvtier/kvtier/tiers/prefixhash"
)

func init() {
	register("hash", "print the chained prefix hash of each full block of tokens", runHash)
}

// runHash prints one lowercase hex digest per full block of the given token
// ids, one per line, and nothing else on stdout. Usage errors go to stderr
// with exit code 2.
func runHash(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kvtier hash", flag.ContinueOnError)
	fs.SetOutput(stderr)
	p := prefixhash.Params{Algo: prefixhash.XXH3}
	fs.TextVar(&p.Algo, "algo", prefixhash.XXH3,
		"hash `mode`: "+strings.Join(prefixhash.AlgoNames(), ", ")+" (xxh3 is kvtier's fast mode; the _cbor modes match vLLM)")
	fs.StringVar(&p.Seed, "seed", prefixhash.DefaultSeed,
		"seed `string` hashed into the root parent. The default is kvtier's own fixed string; vLLM roots its chains in\n"+
			"os.urandom(32), different in every process, unless PYTHONHASHSEED is set: to match vLLM's hashes, start it\n"+
			"with PYTHONHASHSEED=S and pass --seed S (with --algo sha256_cbor)")
	fs.IntVar(&p.BlockTokens, "block-tokens", 16, "`N` token ids per block (vLLM's block_size)")
	fs.StringVar(&p.LoRA, "lora", "", "LoRA adapter name, hashed into every block (empty: none)")
	fs.StringVar(&p.CacheSalt, "cache-salt", "", "cache salt, hashed into block 0 only (empty: none)")
	tokensArg := fs.String("tokens", "", "token ids separated by commas and/or spaces, e.g. 1,2,3")
	tokensFile := fs.String("tokens-file", "", "file of token ids separated by commas and/or whitespace, or a JSON array of integers")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: kvtier hash [flags] (--tokens 1,2,3 | --tokens-file F)")
		fmt.Fprintln(stderr, "\nPrints the chained prefix hash of each full block of tokens, one lowercase hex")
		fmt.Fprintln(stderr, "digest per line; a trailing partial block is not hashed.")
		fmt.Fprintln(stderr, "\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2 // the flag package has printed the error and the usage
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "kvtier hash: "+format+"\n", a...)
		return 2
	}
	if fs.NArg() > 0 {
		return usageErr("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["tokens"] == set["tokens-file"] {
		return usageErr("give exactly one of --tokens and --tokens-file")
	}
	if err := p.Validate(); err != nil {
		return usageErr("%v", err)
	}

	src, what := *tokensArg, "--tokens"
	if set["tokens-file"] {
		b, err := os.ReadFile(*tokensFile)
		if err != nil {
			return usageErr("%v", err)
		}
		src, what = string(b), *tokensFile
	}
	tokens, err := parseTokens(src)
	if err != nil {
		return usageErr("%s: %v", what, err)
	}

	hashes, err := prefixhash.Chain(p, tokens)
	if err != nil {
		return usageErr("%v", err)
	}
	w := bufio.NewWriter(stdout)
	for _, h := range hashes {
		w.WriteString(h.String())
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		fmt.Fprintf(stderr, "kvtier hash: %v\n", err)
		return 1
	}
	return 0
}

// parseTokens reads token ids (unsigned 32-bit decimal integers) separated
// by whitespace and/or single commas, optionally inside one pair of square
// brackets (a JSON array). Empty fields ("1,,2", a leading or trailing
// comma) are errors; empty input is zero tokens. Whitespace alone separates.
func parseTokens(s string) ([]uint32, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "[") {
		if !strings.HasSuffix(s, "]") {
			return nil, errors.New("'[' without a closing ']'")
		}
		s = s[1 : len(s)-1]
	}
	var out []uint32
	needNum := true // a comma now would end an empty field
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case isSpace(c):
			i++
		case c == ',':
			if needNum {
				return nil, fmt.Errorf("empty field before the comma at byte %d", i)
			}
			needNum = true
			i++
		default:
			j := i
			for j < len(s) && s[j] != ',' && !isSpace(s[j]) {
				j++
			}
			v, err := strconv.ParseUint(s[i:j], 10, 32)
			if err != nil {
				f := s[i:j]
				if len(f) > 40 {
					f = f[:40] + "..."
				}
				return nil, fmt.Errorf("token %d: %q is not an integer in 0..4294967295", len(out), f)
			}
			out = append(out, uint32(v))
			needNum = false
			i = j
		}
	}
	if needNum && len(out) > 0 {
		return nil, errors.New("trailing comma")
	}
	return out, nil
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}
