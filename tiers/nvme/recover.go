package nvme

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/kvtier/kvtier/tiers"
)

// Damaged stores.
//
// kvtier is a cache: a store Badger cannot open (a table that fails its
// checksum, a missing MANIFEST, a value log Badger chokes on) is worth less
// than a daemon that starts. With RecoverQuarantine (the default) Open moves
// the directory's files into QuarantineDir inside it, replacing the copy an
// earlier quarantine left there (at most one is kept), and opens an empty
// store; the log says so at Error and TierStats.Quarantined counts it. A
// store whose MANIFEST is gone holds nothing anyone can read back (the keys
// lived in the tables it listed), so its files are removed outright rather
// than kept. With RecoverFail Open returns the error, as before.
//
// Never treated as damage: a directory another process holds (Badger's
// lock), a permission error, a full disk, and a directory holding data that
// is not a kvtier store (ErrFormat): moving those aside would hide a
// mistake or destroy someone else's data.

// RecoverMode is what Open does with a store it cannot open.
type RecoverMode int

const (
	// RecoverQuarantine moves a damaged store aside and starts empty.
	RecoverQuarantine RecoverMode = iota
	// RecoverFail returns the error.
	RecoverFail
)

// QuarantineDir is the subdirectory of the tier's directory that holds the
// last store moved aside.
const QuarantineDir = "quarantine"

// Set parses "quarantine" or "fail" (flag.Value).
func (m *RecoverMode) Set(s string) error {
	switch s {
	case "quarantine":
		*m = RecoverQuarantine
	case "fail":
		*m = RecoverFail
	default:
		return fmt.Errorf("want quarantine or fail, got %q", s)
	}
	return nil
}

func (m RecoverMode) String() string {
	if m == RecoverFail {
		return "fail"
	}
	return "quarantine"
}

// WithRecover sets what Open does with a store it cannot open (default
// RecoverQuarantine).
func WithRecover(m RecoverMode) Option {
	return func(c *config) { c.recover = m }
}

// errDamaged marks a store Open found damaged.
var errDamaged = errors.New("nvme: store damaged")

// badgerFile reports whether name is one of the files Badger keeps.
func badgerFile(name string) bool {
	switch filepath.Ext(name) {
	case ".vlog", ".sst", ".mem":
		return true
	}
	return name == "DISCARD" || name == "KEYREGISTRY" || name == "MANIFEST" || name == "LOCK"
}

// checkManifest reports a directory holding Badger's data files without
// its MANIFEST: everything there is orphaned.
func checkManifest(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil // Badger reports it
	}
	var data []string
	manifest := false
	for _, e := range ents {
		switch n := e.Name(); {
		case n == "MANIFEST":
			manifest = true
		case filepath.Ext(n) == ".vlog" || filepath.Ext(n) == ".sst":
			data = append(data, n)
		}
	}
	if manifest || len(data) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w: %s: %d data files (%s...) but no MANIFEST", errDamaged, errNoManifest, dir, len(data), data[0])
}

// damaged reports whether an error of Open means the store itself is
// damaged, as opposed to held, forbidden, full or foreign.
func damaged(err error) bool {
	switch {
	case err == nil,
		errors.Is(err, ErrFormat),
		errors.Is(err, tiers.ErrNoSpace),
		errors.Is(err, tiers.ErrInvalid),
		errors.Is(err, fs.ErrPermission),
		errors.Is(err, context.Canceled),
		strings.Contains(err.Error(), "Cannot acquire directory lock"):
		return false
	}
	return true
}

// setAside empties dir: with keep, its files move into QuarantineDir
// (replacing what an earlier quarantine left); otherwise Badger's files are
// removed. It returns what it did, for the log.
func setAside(dir string, keep bool) (string, error) {
	q := filepath.Join(dir, QuarantineDir)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	if keep {
		if err := os.RemoveAll(q); err != nil {
			return "", err
		}
		if err := os.Mkdir(q, 0o755); err != nil {
			return "", err
		}
	}
	for _, e := range ents {
		n := e.Name()
		if n == QuarantineDir {
			continue
		}
		p := filepath.Join(dir, n)
		switch {
		case keep:
			err = os.Rename(p, filepath.Join(q, n))
		case badgerFile(n):
			err = os.Remove(p)
		}
		if err != nil {
			return "", err
		}
	}
	if keep {
		return "moved into " + q, nil
	}
	return "orphaned files removed", nil
}

// recoverStore handles a store that failed to open with err: under
// RecoverQuarantine it sets the store aside and returns nil, so that Open
// starts empty; otherwise, or when err is not damage, it returns err.
func recoverStore(dir string, cfg config, err error) error {
	if cfg.recover == RecoverFail || !damaged(err) {
		return err
	}
	what, serr := setAside(dir, !errors.Is(err, errNoManifest))
	if serr != nil {
		return fmt.Errorf("%w (setting the damaged store aside failed too: %v)", err, serr)
	}
	if cfg.logger != nil {
		cfg.logger.LogAttrs(context.Background(), slog.LevelError,
			"nvme: the store could not open and was set aside; starting empty (--nvme-recover fail keeps it and exits)",
			slog.String("dir", dir), slog.String("done", what), slog.Any("err", err))
	}
	return nil
}

// errNoManifest marks checkManifest's finding: nothing there can be read
// back, so nothing is kept.
var errNoManifest = errors.New("nvme: MANIFEST missing")
