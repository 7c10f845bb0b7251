package subnet

// Fits is fits, for the tests of package subnet_test (which use
// subnettest's Store and so cannot be in package subnet).
func (m *Manager) Fits(s Subnets) bool { return m.fits(s) }
