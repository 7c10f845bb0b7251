// Command firewall lets a chained container's traffic through the node's
// firewall (iptables, nftables or firewalld): a drop-in replacement for the
// reference CNI firewall plugin (pkg/firewall).
package main

import (
	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/firewall"
)

func main() { cniplugin.Main("firewall", &firewall.Plugin{}) }
