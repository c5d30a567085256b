package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc/metadata"
)

// TokensFile is the JSON form of the tokens file:
//
//	{"tokens": [
//	  {"name": "engine-a", "token": "s3cret", "namespaces": ["llama-3.1-8b", "tenant-a/*"]},
//	  {"name": "admin", "sha256": "<hex of sha256(token)>", "namespaces": ["*"]}
//	]}
//
// A namespace pattern is an exact namespace, a prefix followed by "*", or
// "*" alone for every namespace. A token is given in clear ("token") or as
// the hex SHA-256 of its value ("sha256"), so the file need not hold secrets.
// Clients send "authorization: Bearer <token>" metadata.
type TokensFile struct {
	Tokens []TokenEntry `json:"tokens"`
}

// TokenEntry is one bearer token and what it may use.
type TokenEntry struct {
	Name       string   `json:"name"`
	Token      string   `json:"token,omitempty"`
	SHA256     string   `json:"sha256,omitempty"`
	Namespaces []string `json:"namespaces"`
}

// principal is who is calling and which namespaces it may use.
type principal struct {
	name     string
	all      bool     // every namespace
	exact    []string // exact namespaces
	prefixes []string // namespace prefixes
}

// anonymous is the principal of every call when no tokens are configured.
var anonymous = &principal{name: "anonymous", all: true}

// allows reports whether p may use namespace ns.
func (p *principal) allows(ns string) bool {
	if p.all {
		return true
	}
	for _, e := range p.exact {
		if e == ns {
			return true
		}
	}
	for _, pre := range p.prefixes {
		if strings.HasPrefix(ns, pre) {
			return true
		}
	}
	return false
}

// authenticator maps token digests to principals. It is immutable after
// LoadTokens, so it needs no lock.
type authenticator struct {
	byDigest map[[sha256.Size]byte]*principal
}

// LoadTokens reads and validates a tokens file.
func LoadTokens(path string) (*authenticator, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: tokens file: %v", ErrConfig, err)
	}
	return parseTokens(b)
}

func parseTokens(b []byte) (*authenticator, error) {
	var f TokensFile
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%w: tokens file: %v", ErrConfig, err)
	}
	if len(f.Tokens) == 0 {
		return nil, fmt.Errorf("%w: tokens file: no tokens", ErrConfig)
	}
	a := &authenticator{byDigest: make(map[[sha256.Size]byte]*principal, len(f.Tokens))}
	for i, t := range f.Tokens {
		where := fmt.Sprintf("tokens file: tokens[%d]", i)
		if t.Name == "" {
			return nil, fmt.Errorf("%w: %s: name is required", ErrConfig, where)
		}
		var d [sha256.Size]byte
		switch {
		case t.Token != "" && t.SHA256 != "":
			return nil, fmt.Errorf("%w: %s (%s): give token or sha256, not both", ErrConfig, where, t.Name)
		case t.Token != "":
			if len(t.Token) < 16 {
				return nil, fmt.Errorf("%w: %s (%s): token is shorter than 16 characters", ErrConfig, where, t.Name)
			}
			d = sha256.Sum256([]byte(t.Token))
		case t.SHA256 != "":
			raw, err := hex.DecodeString(t.SHA256)
			if err != nil || len(raw) != sha256.Size {
				return nil, fmt.Errorf("%w: %s (%s): sha256 must be 64 hex characters", ErrConfig, where, t.Name)
			}
			copy(d[:], raw)
		default:
			return nil, fmt.Errorf("%w: %s (%s): token or sha256 is required", ErrConfig, where, t.Name)
		}
		if _, dup := a.byDigest[d]; dup {
			return nil, fmt.Errorf("%w: %s (%s): token used twice", ErrConfig, where, t.Name)
		}
		p := &principal{name: t.Name}
		if len(t.Namespaces) == 0 {
			return nil, fmt.Errorf("%w: %s (%s): namespaces is empty", ErrConfig, where, t.Name)
		}
		for _, ns := range t.Namespaces {
			switch {
			case ns == "*":
				p.all = true
			case strings.HasSuffix(ns, "*"):
				pre := strings.TrimSuffix(ns, "*")
				if err := validateNamespace("namespaces", pre); err != nil {
					return nil, fmt.Errorf("%w: %s (%s): namespace pattern %q: %v", ErrConfig, where, t.Name, ns, err)
				}
				p.prefixes = append(p.prefixes, pre)
			default:
				if err := validateNamespace("namespaces", ns); err != nil {
					return nil, fmt.Errorf("%w: %s (%s): namespace %q: %v", ErrConfig, where, t.Name, ns, err)
				}
				p.exact = append(p.exact, ns)
			}
		}
		a.byDigest[d] = p
	}
	return a, nil
}

// authenticate finds the principal of a call from its metadata.
func (a *authenticator) authenticate(ctx context.Context) (*principal, error) {
	if a == nil {
		return anonymous, nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) == 0 {
		return nil, fmt.Errorf("%w: missing authorization metadata (Bearer token)", ErrUnauthenticated)
	}
	if len(vals) > 1 {
		return nil, fmt.Errorf("%w: more than one authorization value", ErrUnauthenticated)
	}
	tok, ok := strings.CutPrefix(vals[0], "Bearer ")
	if !ok {
		return nil, fmt.Errorf("%w: authorization is not a Bearer token", ErrUnauthenticated)
	}
	// Tokens are looked up by their SHA-256, so the lookup's timing says
	// nothing useful about the secret.
	if p, ok := a.byDigest[sha256.Sum256([]byte(tok))]; ok {
		return p, nil
	}
	return nil, fmt.Errorf("%w: unknown token", ErrUnauthenticated)
}

type principalKey struct{}

func withPrincipal(ctx context.Context, p *principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// principalOf returns the principal the auth interceptor stored in ctx.
func principalOf(ctx context.Context) *principal {
	if p, ok := ctx.Value(principalKey{}).(*principal); ok {
		return p
	}
	return anonymous
}

// authorize checks that the caller may use namespace ns.
func authorize(ctx context.Context, ns string) error {
	if p := principalOf(ctx); !p.allows(ns) {
		return fmt.Errorf("%w: token %q may not use namespace %q", ErrPermissionDenied, p.name, ns)
	}
	return nil
}
