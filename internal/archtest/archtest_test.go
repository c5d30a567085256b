package archtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// modulePackages lists every package of the module with its imports.
func modulePackages(t *testing.T) []Package {
	t.Helper()
	cmd := exec.Command("go", "list", "-e",
		"-json=ImportPath,Dir,GoFiles,CgoFiles,TestGoFiles,XTestGoFiles,IgnoredGoFiles,Imports,TestImports,XTestImports,Error",
		Module+"/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	var pkgs []Package
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p struct {
			Package
			Dir                                                          string
			GoFiles, CgoFiles, TestGoFiles, XTestGoFiles, IgnoredGoFiles []string
			Error                                                        *struct{ Err string }
		}
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		if p.Error != nil {
			t.Fatalf("go list %s: %s", p.ImportPath, p.Error.Err)
		}
		pkgs = append(pkgs, p.Package)
		for _, f := range slices.Concat(p.GoFiles, p.CgoFiles, p.TestGoFiles, p.XTestGoFiles, p.IgnoredGoFiles) {
			touch(t, filepath.Join(p.Dir, f))
		}
	}
	touchDirs(t)
	return pkgs
}

// touch opens path so that `go test`'s result cache, which sees only the
// files this process opens (not those `go list` reads), reruns the test
// when the file changes.
func touch(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
}

// touchDirs lists every directory of the module, so that a new file or
// package also invalidates the cached result.
func touchDirs(t *testing.T) {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		t.Fatalf("go list -m: %v", err)
	}
	root := strings.TrimSpace(string(out))
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		switch d.Name() {
		case ".git", "testdata", "bin", "node_modules":
			return filepath.SkipDir
		}
		_, err = os.ReadDir(path)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestImportRule fails on any import of the module that the may-import table
// (Rooms) does not allow.
func TestImportRule(t *testing.T) {
	pkgs := modulePackages(t)
	if len(pkgs) < 10 {
		t.Fatalf("go list found %d packages; expected the whole module", len(pkgs))
	}
	for _, line := range Check(Rooms, pkgs) {
		t.Error(line)
	}
}

func TestCheck(t *testing.T) {
	full := func(rel string) string { return Module + "/" + rel }
	cases := []struct {
		name string
		pkg  Package
		want string // substring of the one violation; "" for none
	}{
		{"tiers may import codec", Package{ImportPath: full("tiers"), Imports: []string{full("codec"), "fmt"}}, ""},
		{"tiers may not import daemon", Package{ImportPath: full("tiers"), Imports: []string{full("daemon")}}, "tiers imports daemon"},
		{"codec may not import tiers", Package{ImportPath: full("codec"), Imports: []string{full("tiers")}}, "codec imports tiers"},
		{"prefetch may not import daemon", Package{ImportPath: full("prefetch"), Imports: []string{full("daemon")}}, "prefetch imports daemon"},
		{"daemon may import prefetch", Package{ImportPath: full("daemon"), Imports: []string{full("prefetch"), full("proto/kvtier/v1")}}, ""},
		{"daemon's tests may use client", Package{ImportPath: full("daemon"), XTestImports: []string{full("client")}}, ""},
		{"daemon itself may not use client", Package{ImportPath: full("daemon"), Imports: []string{full("client")}}, "daemon imports client"},
		{"client may not import tiers", Package{ImportPath: full("client"), Imports: []string{full("tiers")}}, "client imports tiers"},
		{"tiers may not use gRPC", Package{ImportPath: full("tiers"), Imports: []string{"google.golang.org/grpc"}}, "gRPC or protobuf"},
		{"codec tests may not use protobuf", Package{ImportPath: full("codec"), TestImports: []string{"google.golang.org/protobuf/proto"}}, "gRPC or protobuf"},
		{"tiers/hbm may import cgo", Package{ImportPath: full("tiers/hbm"), Imports: []string{full("cgo/gpu")}}, ""},
		{"tiers/dram may not import cgo", Package{ImportPath: full("tiers/dram"), Imports: []string{full("cgo/gpu")}}, "tiers/dram imports cgo/gpu"},
		{"tiers may not import its sub-tiers", Package{ImportPath: full("tiers"), Imports: []string{full("tiers/nvme")}}, "tiers imports tiers/nvme"},
		{"benchmarks may import daemon", Package{ImportPath: full("benchmarks/load"), Imports: []string{full("daemon")}}, ""},
		{"benchmarks may not import cmd", Package{ImportPath: full("benchmarks/load"), Imports: []string{full("cmd/kvtier")}}, "benchmarks/load imports cmd/kvtier"},
		{"cmd may import anything", Package{ImportPath: full("cmd/kvtier"), Imports: []string{full("daemon"), full("tiers/nvme")}}, ""},
		{"a new top-level package needs a row", Package{ImportPath: full("newroom")}, "newroom: no row"},
		{"other modules are not checked", Package{ImportPath: "example.com/x", Imports: []string{full("daemon")}}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := Check(Rooms, []Package{c.pkg})
			switch {
			case c.want == "" && len(got) != 0:
				t.Errorf("violations %q, want none", got)
			case c.want != "" && (len(got) != 1 || !strings.Contains(got[0], c.want)):
				t.Errorf("violations %q, want one containing %q", got, c.want)
			}
		})
	}
}
