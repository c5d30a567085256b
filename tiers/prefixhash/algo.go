package prefixhash

import (
	"strconv"
	"strings"
)

// Algo selects how block digests are computed. The zero value is XXH3.
type Algo uint8

const (
	// XXH3 is the fast default: XXH3-128 over a fixed binary encoding
	// (see the package documentation). 16-byte digests. Not vLLM compatible.
	XXH3 Algo = iota
	// SHA256CBOR is vLLM's "sha256_cbor": SHA-256 of canonical CBOR. 32-byte digests.
	SHA256CBOR
	// XXHashCBOR is vLLM's "xxhash_cbor": XXH3-128 of canonical CBOR. 16-byte digests.
	XXHashCBOR

	numAlgos
)

var algoNames = [numAlgos]string{
	XXH3:       "xxh3",
	SHA256CBOR: "sha256_cbor",
	XXHashCBOR: "xxhash_cbor",
}

// AlgoNames returns the names ParseAlgo accepts, in Algo order.
func AlgoNames() []string { return append([]string(nil), algoNames[:]...) }

// ParseAlgo returns the Algo named s ("xxh3", "sha256_cbor" or "xxhash_cbor").
// The error wraps ErrInvalid.
func ParseAlgo(s string) (Algo, error) {
	for i, n := range algoNames {
		if s == n {
			return Algo(i), nil
		}
	}
	return 0, invalidf("algo: unknown %q, want one of %s", s, strings.Join(algoNames[:], ", "))
}

// String returns the name ParseAlgo accepts, or "Algo(n)" for an unknown value.
func (a Algo) String() string {
	if a.valid() {
		return algoNames[a]
	}
	return "Algo(" + strconv.Itoa(int(a)) + ")"
}

// Size returns the digest length in bytes: 32 for SHA256CBOR, 16 otherwise
// (0 for an unknown value).
func (a Algo) Size() int {
	switch a {
	case SHA256CBOR:
		return 32
	case XXH3, XXHashCBOR:
		return 16
	}
	return 0
}

// MarshalText implements encoding.TextMarshaler (config files, flag.TextVar).
func (a Algo) MarshalText() ([]byte, error) {
	if !a.valid() {
		return nil, invalidf("algo: unknown value %d", uint8(a))
	}
	return []byte(algoNames[a]), nil
}

// UnmarshalText implements encoding.TextUnmarshaler using ParseAlgo.
func (a *Algo) UnmarshalText(b []byte) error {
	v, err := ParseAlgo(string(b))
	if err != nil {
		return err
	}
	*a = v
	return nil
}

func (a Algo) valid() bool { return a < numAlgos }
