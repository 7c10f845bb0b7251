// Command bridge attaches containers to a Linux bridge through veth pairs,
// a drop-in replacement for the reference CNI bridge plugin.
package main

import "github.com/cnisuite/cni/pkg/cniplugin"

func main() { cniplugin.Main("bridge", &plugin{}) }
