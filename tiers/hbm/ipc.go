package hbm

import (
	"fmt"
	"time"

	"github.com/kvtier/kvtier/cgo/gpu"
	"github.com/kvtier/kvtier/tiers"
)

// IPC export. Freeing an allocation another process still maps through an
// IPC handle is undefined behaviour (CUDA and HIP say so), so every
// importer holds a lease: AttachIPC before opening the handle, RenewIPC
// while it keeps the mapping, DetachIPC after closing it. Close tells
// importers through Closing and frees the arena only when every lease has
// been detached or has expired.

// Lease lifetimes of importers.
const (
	// DefaultIPCLease is the lease an importer gets when it asks for none.
	DefaultIPCLease = 30 * time.Second
	// MaxIPCLease bounds a lease, and so how long Close waits for an
	// importer that neither detaches nor renews.
	MaxIPCLease = 2 * time.Minute
)

// IPCLease is an importer's right to map the arena.
type IPCLease struct {
	ID uint64
	// Handle is the exported allocation (cuIpcGetMemHandle /
	// hipIpcGetMemHandle). Open it with cuIpcOpenMemHandle (flag
	// CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS) or gpu.Device.OpenIPCHandle.
	Handle gpu.IPCHandle
	// Offset is where the arena starts in the exported allocation, and
	// Size its length: block offsets from Locate are relative to
	// mapping+Offset. The arena is allocated alone, in whole 2 MiB
	// granules, so the export is its own allocation and Offset is 0.
	Offset, Size int64
	// Expires is when the lease lapses unless renewed.
	Expires time.Time
}

// AttachIPC exports the arena (once) and leases it to one importer for
// ttl (0: DefaultIPCLease; at most MaxIPCLease).
func (t *Tier) AttachIPC(ttl time.Duration) (IPCLease, error) {
	ttl, err := leaseTTL(ttl)
	if err != nil {
		return IPCLease{}, err
	}
	if err := t.enter(); err != nil {
		return IPCLease{}, err
	}
	defer t.life.RUnlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ipc == nil {
		h, err := t.dev.IPCHandle(t.base)
		if err != nil {
			return IPCLease{}, fmt.Errorf("hbm: exporting the arena: %w", err)
		}
		t.ipc = &h
	}
	t.nextImporter++
	id := t.nextImporter
	exp := t.now().Add(ttl)
	t.importers[id] = exp
	return IPCLease{ID: id, Handle: *t.ipc, Offset: 0, Size: t.capacity, Expires: exp}, nil
}

// RenewIPC extends lease id by ttl from now. An expired or detached lease
// is tiers.ErrNotFound: the importer must close its mapping. Renewing
// works while the tier is closing, so an importer can finish its copies.
func (t *Tier) RenewIPC(id uint64, ttl time.Duration) (time.Time, error) {
	ttl, err := leaseTTL(ttl)
	if err != nil {
		return time.Time{}, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expireLocked()
	if _, ok := t.importers[id]; !ok {
		return time.Time{}, fmt.Errorf("%w: hbm: IPC lease %d (expired or detached)", tiers.ErrNotFound, id)
	}
	exp := t.now().Add(ttl)
	t.importers[id] = exp
	return exp, nil
}

// DetachIPC ends lease id; the importer has closed its mapping. Detaching
// an unknown or expired lease is not an error.
func (t *Tier) DetachIPC(id uint64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.importers[id]; ok {
		delete(t.importers, id)
		t.signalLocked()
	}
	return nil
}

// Importers returns the number of live IPC leases.
func (t *Tier) Importers() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expireLocked()
	return len(t.importers)
}

// Closing is closed when Close begins: importers must close their
// mappings and detach (the daemon relays it to its clients).
func (t *Tier) Closing() <-chan struct{} { return t.closing }

func leaseTTL(ttl time.Duration) (time.Duration, error) {
	switch {
	case ttl < 0:
		return 0, fmt.Errorf("%w: hbm: negative IPC lease %v", tiers.ErrInvalid, ttl)
	case ttl == 0:
		return DefaultIPCLease, nil
	}
	return min(ttl, MaxIPCLease), nil
}

// expireLocked drops lapsed leases. Called with t.mu held.
func (t *Tier) expireLocked() {
	now := t.now()
	for id, exp := range t.importers {
		if !now.Before(exp) {
			delete(t.importers, id)
			t.signalLocked()
		}
	}
}

// signalLocked wakes a Close waiting for importers. Called with t.mu held.
func (t *Tier) signalLocked() {
	close(t.detached)
	t.detached = make(chan struct{})
}

// waitImporters blocks until no lease is live: each detached or expired.
// Called by Close after it has marked the tier closed.
func (t *Tier) waitImporters() {
	for {
		t.mu.Lock()
		t.expireLocked()
		if len(t.importers) == 0 {
			t.mu.Unlock()
			return
		}
		var last time.Time
		for _, exp := range t.importers {
			if exp.After(last) {
				last = exp
			}
		}
		wake := t.detached
		wait := last.Sub(t.now())
		t.mu.Unlock()
		timer := time.NewTimer(max(wait, time.Millisecond))
		select {
		case <-wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}
