// Command cnictl inspects and repairs the CNI suite's state on a node, e.g.
// `cnictl ipam ls` and `cnictl ipam gc cbr0 --dry-run`. See internal/cnictl.
package main

import (
	"os"

	"github.com/cnisuite/cni/internal/cnictl"
)

func main() { os.Exit(cnictl.Main(os.Args[1:], os.Stdout, os.Stderr)) }
