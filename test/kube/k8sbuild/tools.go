//go:build tools

// Package k8sbuild pins the Kubernetes commands the tests run; it is never
// compiled. scripts/k8s-bins.sh builds the commands named here (go build
// k8s.io/kubernetes/cmd/<name>) with this module's go.mod and go.sum: a command
// must be imported here before it can be built, so that go.sum covers it.
package k8sbuild

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
