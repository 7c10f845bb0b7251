module github.com/cnisuite/cni

go 1.26.0

require (
	github.com/containernetworking/cni v1.3.0
	github.com/vishvananda/netlink v1.3.1
	golang.org/x/sys v0.49.0
)

require github.com/vishvananda/netns v0.0.5 // indirect
