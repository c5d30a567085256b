package archtest

import (
	"fmt"
	"sort"
	"strings"
)

// Module is the module path the table's package paths are relative to.
const Module = "github.com/kvtier/kvtier"

// A Room is a package, or a subtree written "dir/...", with the module
// packages it may import. Paths are relative to Module; "x/..." matches x
// and every package below it.
type Room struct {
	Pkg string
	// May lists what the package's non-test files may import.
	May []string
	// TestMay lists what its _test.go files may import on top of May.
	TestMay []string
	// NoRPC: neither the package nor its tests may import gRPC or protobuf
	// (google.golang.org/grpc/..., google.golang.org/protobuf/...).
	NoRPC bool
	// AllBut: the package may import every module package except these
	// (May and TestMay are then ignored).
	AllBut []string
}

// evalHelpers are the evaluation helpers any test may use.
var evalHelpers = []string{"internal/kveval", "internal/kvfile"}

// Rooms is the may-import table. Arrows point one way:
// cmd → daemon → prefetch → tiers → codec, tiers/hbm → cgo, client → proto;
// benchmarks sit above everything but cmd; internal/* are helpers.
var Rooms = []Room{
	{Pkg: "proto/..."},
	{Pkg: "codec", TestMay: evalHelpers, NoRPC: true},
	{Pkg: "cgo/...", May: []string{"cgo/..."}, NoRPC: true},
	{Pkg: "tiers", May: []string{"codec", "internal/ntcopy"},
		TestMay: append([]string{"tiers/dram", "tiers/nvme"}, evalHelpers...), NoRPC: true},
	{Pkg: "tiers/dram", May: []string{"tiers", "codec", "internal/ntcopy"}, TestMay: evalHelpers, NoRPC: true},
	{Pkg: "tiers/nvme/...", May: []string{"tiers", "tiers/nvme/...", "codec", "internal/ntcopy"}, TestMay: evalHelpers, NoRPC: true},
	{Pkg: "tiers/hbm", May: []string{"tiers", "codec", "cgo/..."},
		TestMay: append([]string{"tiers/dram"}, evalHelpers...), NoRPC: true},
	{Pkg: "tiers/prefixhash", May: []string{"tiers"}, NoRPC: true},
	{Pkg: "prefetch", May: []string{"tiers", "tiers/prefixhash", "codec"},
		TestMay: append([]string{"tiers/dram", "tiers/nvme"}, evalHelpers...), NoRPC: true},
	{Pkg: "daemon", May: []string{"prefetch", "tiers", "tiers/prefixhash", "codec", "proto/...", "internal/wire", "internal/ntcopy"},
		TestMay: append([]string{"client", "tiers/dram", "tiers/nvme"}, evalHelpers...)},
	{Pkg: "client", May: []string{"proto/...", "internal/wire", "internal/ntcopy"},
		TestMay: []string{"daemon", "tiers", "tiers/dram"}}, // tests against an in-process daemon
	{Pkg: "internal/wire", TestMay: []string{"proto/..."}},
	{Pkg: "internal/ntcopy", NoRPC: true},
	{Pkg: "internal/kvfile", NoRPC: true},
	{Pkg: "internal/kveval", May: []string{"codec"}, TestMay: []string{"internal/kvfile"}, NoRPC: true},
	{Pkg: "internal/archtest", NoRPC: true},
	{Pkg: "benchmarks/...", AllBut: []string{"cmd/...", "test/..."}},
	{Pkg: "test/...", May: []string{"client", "proto/...", "tiers/prefixhash"}, TestMay: []string{"internal/..."}},
	{Pkg: "python/...", May: []string{"client", "proto/..."}}, // the Python tests' Go reference client
	{Pkg: "scripts", NoRPC: true},                             // the shell scripts' tests; no Go API
	{Pkg: "cmd/...", AllBut: []string{"test/..."}},
}

// Package is what Check needs to know of one package, as `go list -json`
// reports it (full import paths).
type Package struct {
	ImportPath   string
	Imports      []string
	TestImports  []string
	XTestImports []string
}

// match reports whether pattern ("x" or "x/...") matches the module-relative
// package path rel.
func match(pattern, rel string) bool {
	if dir, ok := strings.CutSuffix(pattern, "/..."); ok {
		return rel == dir || strings.HasPrefix(rel, dir+"/")
	}
	return rel == pattern
}

// roomOf returns the most specific room whose pattern matches rel.
func roomOf(rooms []Room, rel string) (Room, bool) {
	best, found := Room{}, false
	for _, r := range rooms {
		if match(r.Pkg, rel) && (!found || len(r.Pkg) > len(best.Pkg)) {
			best, found = r, true
		}
	}
	return best, found
}

func anyMatch(patterns []string, rel string) bool {
	for _, p := range patterns {
		if match(p, rel) {
			return true
		}
	}
	return false
}

func isRPC(path string) bool {
	return path == "google.golang.org/grpc" || strings.HasPrefix(path, "google.golang.org/grpc/") ||
		path == "google.golang.org/protobuf" || strings.HasPrefix(path, "google.golang.org/protobuf/")
}

// Check returns one line per import the rooms do not allow, and per module
// package no room names, sorted.
func Check(rooms []Room, pkgs []Package) []string {
	var bad []string
	for _, p := range pkgs {
		rel, ok := relPath(p.ImportPath)
		if !ok {
			continue
		}
		room, ok := roomOf(rooms, rel)
		if !ok {
			bad = append(bad, fmt.Sprintf("%s: no row in the may-import table (internal/archtest.Rooms)", rel))
			continue
		}
		seen := map[string]bool{}
		check := func(imps []string, test bool) {
			for _, imp := range imps {
				if seen[imp] {
					continue
				}
				seen[imp] = true
				what := "imports"
				if test {
					what = "test imports"
				}
				if isRPC(imp) && room.NoRPC {
					bad = append(bad, fmt.Sprintf("%s %s %s: nothing below daemon may use gRPC or protobuf", rel, what, imp))
					continue
				}
				dep, ok := relPath(imp)
				if !ok || dep == rel {
					continue
				}
				if !allowed(room, dep, test) {
					bad = append(bad, fmt.Sprintf("%s %s %s: not in its may-import row", rel, what, dep))
				}
			}
		}
		check(p.Imports, false)
		check(p.TestImports, true)
		check(p.XTestImports, true)
	}
	sort.Strings(bad)
	return bad
}

func allowed(r Room, dep string, test bool) bool {
	if r.AllBut != nil {
		return !anyMatch(r.AllBut, dep)
	}
	return anyMatch(r.May, dep) || (test && anyMatch(r.TestMay, dep))
}

func relPath(importPath string) (string, bool) {
	if importPath == Module {
		return ".", true
	}
	return strings.CutPrefix(importPath, Module+"/")
}
