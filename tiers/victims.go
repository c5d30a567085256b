package tiers

// Eviction by importance. A VictimSource (the prefetcher) knows which
// blocks of active requests attention is predicted to leave alone; when
// one is set, eviction first drops the copies it names, least important
// first, and falls back to LRU when none of them can go.

// VictimSource proposes copies to evict from a level. Victims calls fn
// with candidate keys, least important first, until fn returns true. It
// is called from eviction with no store lock held, and fn takes a shard
// lock: an implementation may hold its own locks across fn only if it
// never calls the Store while holding them.
type VictimSource interface {
	Victims(l Level, fn func(Key) bool)
}

// victimScan bounds the candidates one eviction examines from a VictimSource.
const victimScan = 64

// victimSource is the holder SetVictims stores.
type victimSource struct{ VictimSource }

// SetVictims makes eviction consult v before LRU (the importance policy);
// nil restores plain LRU. It may be called at any time.
func (s *Store) SetVictims(v VictimSource) {
	if v == nil {
		s.victims.Store(nil)
		return
	}
	s.victims.Store(&victimSource{v})
}

// evictVictim drops one copy on list l that the victim source proposes and
// that is free to drop: unpinned, and not the block's last copy (DRAM
// copies that NVMe holds, HBM copies), so no demotion I/O and no chain is
// cut. It reports whether it freed one.
func (s *Store) evictVictim(l int) bool {
	vs := s.victims.Load()
	if vs == nil {
		return false
	}
	bit, freed, seen := bitOf[l], false, 0
	vs.Victims(levelOf[l], func(k Key) bool {
		seen++
		if k.Validate() != nil {
			return seen >= victimScan
		}
		k.Namespace = s.intern(k.Namespace, false)
		sh, fp := s.locate(k)
		sh.mu.Lock()
		i := sh.findFP(k, fp)
		if i == nilIdx {
			sh.mu.Unlock()
			return seen >= victimScan
		}
		e := sh.at(i)
		last := e.where&^s.dropBits(bit) == 0
		if e.pins > 0 || e.where&bit == 0 || last {
			sh.mu.Unlock()
			return seen >= victimScan
		}
		s.evictAt(sh, i, l) // releases sh.mu
		freed = true
		return true
	})
	return freed
}
