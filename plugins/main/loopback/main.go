// Command loopback brings up the lo interface of a container's namespace.
package main

import "github.com/cnisuite/cni/pkg/cniplugin"

func main() { cniplugin.Main("loopback", &plugin{}) }
