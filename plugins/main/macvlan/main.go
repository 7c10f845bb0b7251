// Command macvlan gives containers a macvlan link on a node interface, their
// own MAC on its L2 segment, a drop-in replacement for the reference CNI
// macvlan plugin.
package main

import "github.com/cnisuite/cni/pkg/cniplugin"

func main() { cniplugin.Main("macvlan", &plugin{}) }
