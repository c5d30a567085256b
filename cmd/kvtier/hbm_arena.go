package main

import (
	"time"

	"github.com/kvtier/kvtier/daemon"
	"github.com/kvtier/kvtier/tiers/hbm"
)

// hbmArena adapts the HBM tier's IPC leases to the daemon's HBMArena, so
// local engines lease the arena through AttachHbmArena.
type hbmArena struct{ t *hbm.Tier }

var _ daemon.HBMArena = hbmArena{}

func (a hbmArena) AttachIPC(ttl time.Duration) (daemon.HBMExport, error) {
	l, err := a.t.AttachIPC(ttl)
	if err != nil {
		return daemon.HBMExport{}, err
	}
	return daemon.HBMExport{ID: l.ID, Handle: l.Handle, Offset: l.Offset, Size: l.Size}, nil
}

func (a hbmArena) RenewIPC(id uint64, ttl time.Duration) error {
	_, err := a.t.RenewIPC(id, ttl)
	return err
}

func (a hbmArena) DetachIPC(id uint64) error { return a.t.DetachIPC(id) }

func (a hbmArena) Closing() <-chan struct{} { return a.t.Closing() }
