package nvme

import "errors"

// Errors of this package. Most failures wrap the tiers sentinels
// (tiers.ErrInvalid, ErrNotFound, ErrFull, ErrExhausted, ErrCorrupt,
// ErrClosed); these add what only the NVMe tier can say. Test with errors.Is.
var (
	// ErrFormat: the directory holds data this version cannot read (another
	// program's Badger database, a newer format, or a damaged meta record).
	ErrFormat = errors.New("nvme: unknown on-disk format")
	// ErrStore: the storage engine (Badger) failed an operation: an I/O
	// error, a full disk, a closed database. The message carries Badger's error.
	ErrStore = errors.New("nvme: storage engine error")
)

// errNoKey is the store's "key not found"; the tier maps it to tiers.ErrNotFound.
var errNoKey = errors.New("nvme: key not in store")

// errFault is a panic caught inside the storage engine; on a read it is
// usually a memory fault on a value log file truncated or unreadable under
// its mapping, and the tier treats the block as corrupt.
var errFault = errors.New("nvme: panic or memory fault in the storage engine")

// errPoisoned marks a fault inside the storage engine that may have left its
// internal locks held: the tier stops value-log GC and bounds Close.
var errPoisoned = errors.New("nvme: storage engine damaged by a fault")

// errBadFrame: the bytes read for a block are not a valid frame.
var errBadFrame = errors.New("nvme: bad frame")

// errNoValue: Badger handed out no value for a key it has (it logs and
// swallows value log read errors).
var errNoValue = errors.New("nvme: no value read")
