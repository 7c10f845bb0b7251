// Command subnetd is the node daemon: it leases this node's pod subnet in
// etcd, or takes its Node's pod CIDR in the Kubernetes API
// (--kube-subnet-mgr), writes subnet.env and programs the overlay to the
// other nodes. Built with the tag nokube (as make build does), it leaves
// the Kubernetes API mode to subnetd-kube, this command built without it.
// See internal/subnetd.
package main

import (
	"os"

	"github.com/cnisuite/cni/internal/subnetd"
)

func main() { os.Exit(subnetd.Main(os.Args[1:])) }
