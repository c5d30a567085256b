package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"

	"google.golang.org/grpc/metadata"
)

func TestParseTokens(t *testing.T) {
	digest := sha256.Sum256([]byte("hashed-token-value-01"))
	for _, tc := range []struct {
		name string
		json string
		ok   bool
	}{
		{"valid", `{"tokens":[{"name":"a","token":"0123456789abcdef","namespaces":["x","y/*"]},{"name":"b","sha256":"` + hex.EncodeToString(digest[:]) + `","namespaces":["*"]}]}`, true},
		{"empty", `{"tokens":[]}`, false},
		{"not json", `tokens`, false},
		{"unknown field", `{"tokens":[{"name":"a","token":"0123456789abcdef","namespaces":["x"],"admin":true}]}`, false},
		{"no name", `{"tokens":[{"token":"0123456789abcdef","namespaces":["x"]}]}`, false},
		{"short token", `{"tokens":[{"name":"a","token":"short","namespaces":["x"]}]}`, false},
		{"token and sha256", `{"tokens":[{"name":"a","token":"0123456789abcdef","sha256":"00","namespaces":["x"]}]}`, false},
		{"bad sha256", `{"tokens":[{"name":"a","sha256":"zz","namespaces":["x"]}]}`, false},
		{"no namespaces", `{"tokens":[{"name":"a","token":"0123456789abcdef"}]}`, false},
		{"bad namespace", `{"tokens":[{"name":"a","token":"0123456789abcdef","namespaces":["a b"]}]}`, false},
		{"duplicate", `{"tokens":[{"name":"a","token":"0123456789abcdef","namespaces":["x"]},{"name":"b","token":"0123456789abcdef","namespaces":["y"]}]}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseTokens([]byte(tc.json))
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrConfig) {
				t.Errorf("error does not wrap ErrConfig: %v", err)
			}
		})
	}
}

func TestAuthenticate(t *testing.T) {
	digest := sha256.Sum256([]byte("hashed-token-value-01"))
	a, err := parseTokens([]byte(`{"tokens":[{"name":"a","token":"0123456789abcdef","namespaces":["x","y/*"]},{"name":"b","sha256":"` + hex.EncodeToString(digest[:]) + `","namespaces":["*"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	ctxWith := func(v ...string) context.Context {
		md := metadata.MD{}
		for _, s := range v {
			md.Append("authorization", s)
		}
		return metadata.NewIncomingContext(context.Background(), md)
	}
	for _, tc := range []struct {
		name    string
		ctx     context.Context
		who     string
		allowed []string
		denied  []string
	}{
		{"clear token", ctxWith("Bearer 0123456789abcdef"), "a", []string{"x", "y/1", "y/"}, []string{"xx", "y", "z"}},
		{"hashed token", ctxWith("Bearer hashed-token-value-01"), "b", []string{"anything", "x"}, nil},
		{"missing", context.Background(), "", nil, nil},
		{"not bearer", ctxWith("Basic 0123456789abcdef"), "", nil, nil},
		{"unknown", ctxWith("Bearer 0123456789abcdeX"), "", nil, nil},
		{"two values", ctxWith("Bearer 0123456789abcdef", "Bearer 0123456789abcdef"), "", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := a.authenticate(tc.ctx)
			if tc.who == "" {
				if !errors.Is(err, ErrUnauthenticated) {
					t.Fatalf("err = %v, want ErrUnauthenticated", err)
				}
				return
			}
			if err != nil || p.name != tc.who {
				t.Fatalf("principal %v, %v; want %s", p, err, tc.who)
			}
			ctx := withPrincipal(context.Background(), p)
			for _, ns := range tc.allowed {
				if err := authorize(ctx, ns); err != nil {
					t.Errorf("%s denied: %v", ns, err)
				}
			}
			for _, ns := range tc.denied {
				if err := authorize(ctx, ns); !errors.Is(err, ErrPermissionDenied) {
					t.Errorf("%s: %v, want ErrPermissionDenied", ns, err)
				}
			}
		})
	}
	var none *authenticator
	if p, err := none.authenticate(context.Background()); err != nil || !p.all {
		t.Errorf("no tokens configured: %v %v, want anonymous", p, err)
	}
}
