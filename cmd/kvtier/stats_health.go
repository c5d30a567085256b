package main

import (
	"fmt"
	"io"
)

// printTierHealth prints a line under `kvtier stats`'s table for each tier
// that is not taking writes or that set a damaged store aside at start.
func printTierHealth(w io.Writer, tiers []tierJSON) {
	for _, t := range tiers {
		if t.WritesStopped {
			fmt.Fprintf(w, "%s: WRITES STOPPED: out of disk space (%d bytes free); serving what it holds, resumes when space is freed\n",
				t.Name, t.FreeBytes)
		}
		if t.Quarantined > 0 {
			fmt.Fprintf(w, "%s: the store could not open at start and was set aside; started empty (see the daemon's log)\n", t.Name)
		}
	}
}
