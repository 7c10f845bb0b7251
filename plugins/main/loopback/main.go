// Command loopback brings up the lo interface of a container's namespace
// (pkg/loopback).
package main

import (
	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/loopback"
)

func main() { cniplugin.Main("loopback", &loopback.Plugin{}) }
