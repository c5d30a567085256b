package tiers

import (
	"strings"
	"sync"
	"sync/atomic"
)

// nsTable numbers the namespaces the store has indexed, so that an index
// entry holds a 4-byte id instead of a string (16 bytes and a pointer for
// the collector to trace), and the tiers share one copy of each name.
// Ids are never reused or freed: a store sees few namespaces (models,
// LoRAs, tenants), each costing its name once. Safe for concurrent use;
// lookups take no lock.
type nsTable struct {
	ids   sync.Map                 // name → id (uint32)
	mu    sync.Mutex               // serializes additions
	names atomic.Pointer[[]string] // by id; append-only, republished on every addition
}

// lookup returns ns's id, if ns has one.
func (t *nsTable) lookup(ns string) (uint32, bool) {
	v, ok := t.ids.Load(ns)
	if !ok {
		return 0, false
	}
	return v.(uint32), true
}

// add returns ns's id, giving it one first if needed.
func (t *nsTable) add(ns string) uint32 {
	if id, ok := t.lookup(ns); ok {
		return id
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if id, ok := t.lookup(ns); ok {
		return id
	}
	var names []string
	if p := t.names.Load(); p != nil {
		names = *p
	}
	id := uint32(len(names))
	// Publish the name before the id, so that whoever finds the id finds
	// the name. Appending past the length other readers hold is invisible
	// to them.
	names = append(names, strings.Clone(ns))
	t.names.Store(&names)
	t.ids.Store(names[id], id)
	return id
}

// name returns the name of id, which lookup or add returned.
func (t *nsTable) name(id uint32) string { return (*t.names.Load())[id] }

// intern returns the table's copy of ns when it has one, ns otherwise.
func (t *nsTable) intern(ns string) string {
	if id, ok := t.lookup(ns); ok {
		return t.name(id)
	}
	return ns
}
