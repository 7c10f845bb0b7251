// Command flannel is the meta plugin of flannel networks: it turns the
// node's subnet.env (written by subnetd or flanneld) into the configuration
// of another plugin (bridge with host-local by default) and delegates to
// it, a drop-in replacement for flannel's CNI plugin.
package main

import "github.com/cnisuite/cni/pkg/cniplugin"

func main() { cniplugin.Main("flannel", &plugin{}) }
