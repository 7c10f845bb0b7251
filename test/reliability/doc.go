// Package reliability holds the suite-wide reliability and security tests:
// faults injected into the built binaries, hostile input, file modes and
// atomic writes, and load. Privileged tests skip unless run as root and work
// only inside namespaces they create. `make soak` sets SOAK=1 for the long tier.
package reliability
