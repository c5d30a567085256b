package tiers

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
)

// Limits on the parts of a Key.
const (
	MaxNamespaceLen = 128
	MaxLayer        = 1023
	// AllLayers is the layer of a block that holds every layer of the model.
	AllLayers = -1
)

// Hash is a block's prefix hash: 16 bytes (XXH3-128) or 32 bytes (SHA-256).
// The zero value is invalid. Hash is comparable and is used as a map key.
type Hash struct {
	n uint8
	b [32]byte
}

// HashFromBytes copies a 16- or 32-byte digest into a Hash.
func HashFromBytes(b []byte) (Hash, error) {
	var h Hash
	if len(b) != 16 && len(b) != 32 {
		return h, fmt.Errorf("%w: hash: %d bytes, want 16 or 32", ErrInvalid, len(b))
	}
	h.n = uint8(len(b))
	copy(h.b[:], b)
	return h, nil
}

// ParseHash decodes a hex digest of 32 or 64 characters.
func ParseHash(s string) (Hash, error) {
	var buf [32]byte
	if len(s) != 32 && len(s) != 64 {
		return Hash{}, fmt.Errorf("%w: hash: %d hex characters, want 32 or 64", ErrInvalid, len(s))
	}
	n, err := hex.Decode(buf[:], []byte(s))
	if err != nil {
		return Hash{}, fmt.Errorf("%w: hash: %v", ErrInvalid, err)
	}
	return HashFromBytes(buf[:n])
}

// Len returns the digest length in bytes (0 for the zero Hash).
func (h Hash) Len() int { return int(h.n) }

// Bytes returns the digest. The slice is a copy.
func (h Hash) Bytes() []byte { return append([]byte(nil), h.b[:h.n]...) }

// AppendTo appends the digest to dst.
func (h Hash) AppendTo(dst []byte) []byte { return append(dst, h.b[:h.n]...) }

// IsZero reports whether h is the zero Hash.
func (h Hash) IsZero() bool { return h.n == 0 }

// EventID returns the last 8 bytes of the digest as a big-endian integer, the
// form in which vLLM's KV events carry block hashes.
func (h Hash) EventID() uint64 {
	if h.n < 8 {
		return 0
	}
	return binary.BigEndian.Uint64(h.b[h.n-8 : h.n])
}

func (h Hash) String() string { return hex.EncodeToString(h.b[:h.n]) }

// Key identifies a block: namespace (model, LoRA, tenant, cache salt) +
// prefix hash + layer (AllLayers for a block holding every layer).
type Key struct {
	Namespace string
	Hash      Hash
	Layer     int16
}

// Validate checks the key's parts; the error wraps ErrInvalid and names the field.
func (k Key) Validate() error {
	if err := ValidateNamespace(k.Namespace); err != nil {
		return err
	}
	if k.Hash.n != 16 && k.Hash.n != 32 {
		return fmt.Errorf("%w: hash: %d bytes, want 16 or 32", ErrInvalid, k.Hash.n)
	}
	return ValidateLayer(int(k.Layer))
}

// ValidateNamespace checks that ns is 1–128 bytes of [A-Za-z0-9._:/@-]; the
// error wraps ErrInvalid.
func ValidateNamespace(ns string) error {
	if p := NamespaceProblem(ns); p != "" {
		return fmt.Errorf("%w: namespace: %s", ErrInvalid, p)
	}
	return nil
}

// NamespaceProblem says what is wrong with ns as a namespace, or "" when
// nothing is. It is the one statement of the namespace rules: the daemon's
// field errors and the CLI use it through ValidateNamespace or directly.
func NamespaceProblem(ns string) string {
	if len(ns) == 0 || len(ns) > MaxNamespaceLen {
		return fmt.Sprintf("length %d not in 1..%d", len(ns), MaxNamespaceLen)
	}
	for i := 0; i < len(ns); i++ {
		c := ns[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '_', c == ':', c == '/', c == '@', c == '-':
		default:
			return fmt.Sprintf("byte %q at %d not in [A-Za-z0-9._:/@-]", c, i)
		}
	}
	return ""
}

// ValidateLayer checks that layer is AllLayers (-1) or 0..MaxLayer; the
// error wraps ErrInvalid.
func ValidateLayer(layer int) error {
	if layer < AllLayers || layer > MaxLayer {
		return fmt.Errorf("%w: layer: %d not in -1..%d", ErrInvalid, layer, MaxLayer)
	}
	return nil
}

func (k Key) String() string { return fmt.Sprintf("%s/%s/%d", k.Namespace, k.Hash, k.Layer) }

// AppendBinary appends a self-delimiting binary form of k, used as the key in
// persistent tiers: len(ns) u8, ns, len(hash) u8, hash, layer i16 big-endian.
// Keys of one namespace share a prefix, so a tier can scan a namespace.
func (k Key) AppendBinary(dst []byte) []byte {
	dst = append(dst, byte(len(k.Namespace)))
	dst = append(dst, k.Namespace...)
	dst = append(dst, k.Hash.n)
	dst = append(dst, k.Hash.b[:k.Hash.n]...)
	return binary.BigEndian.AppendUint16(dst, uint16(k.Layer))
}

// ParseKey decodes the form written by AppendBinary and validates it.
func ParseKey(b []byte) (Key, error) {
	var k Key
	if len(b) < 1 {
		return k, fmt.Errorf("%w: empty binary key", ErrInvalid)
	}
	nsLen := int(b[0])
	if len(b) < 1+nsLen+1 {
		return k, fmt.Errorf("%w: binary key truncated in namespace", ErrInvalid)
	}
	k.Namespace = string(b[1 : 1+nsLen])
	b = b[1+nsLen:]
	hLen := int(b[0])
	if hLen > 32 || len(b) != 1+hLen+2 {
		return k, fmt.Errorf("%w: binary key has bad hash length %d or trailing bytes", ErrInvalid, hLen)
	}
	k.Hash.n = uint8(hLen)
	copy(k.Hash.b[:], b[1:1+hLen])
	k.Layer = int16(binary.BigEndian.Uint16(b[1+hLen:]))
	return k, k.Validate()
}
