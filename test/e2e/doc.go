// Package e2e runs the suite's binaries the way a node runs them: built from
// ./plugins/..., driven through the real clients (libcni in-process and
// cnitool), fed malformed input, and asked for every spec version. The
// privileged tests run the plugins inside a "node" namespace with "pods" as
// further namespaces, all created by the test and deleted when it ends. It
// drives plugins and daemons only as built binaries: of the suite it imports
// fixtures and the packages that read what the binaries write (leases,
// subnet.env, IPAM's store, the family type), never a plugin's package or
// daemon/.
package e2e
