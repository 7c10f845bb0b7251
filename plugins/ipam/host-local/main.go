// Command host-local is the host-local IPAM plugin: it hands out addresses
// from configured ranges and keeps reservations in files on the node, in the
// layout of the reference plugin.
package main

import "github.com/cnisuite/cni/pkg/cniplugin"

func main() { cniplugin.Main("host-local", &plugin{}) }
