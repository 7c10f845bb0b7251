// Command subnetd-etcd is subnetd's embedded etcd, a single-member server
// on loopback that subnetd runs as its child when given no
// --etcd-endpoints. See internal/subnetd/etcdchild.
package main

import (
	"os"

	"github.com/cnisuite/cni/internal/subnetd/etcdchild"
)

func main() { os.Exit(etcdchild.Main(os.Args[1:])) }
