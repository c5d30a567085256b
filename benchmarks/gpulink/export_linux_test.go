package gpulink

// SetSysfs points the NUMA lookups at a test tree until restore is called.
func SetSysfs(pci, node string) (restore func()) {
	oldPCI, oldNode := sysfsPCI, sysfsNode
	sysfsPCI, sysfsNode = pci, node
	return func() { sysfsPCI, sysfsNode = oldPCI, oldNode }
}

// OnNode is onNode, for tests.
var OnNode = onNode
