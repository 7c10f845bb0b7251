package subnetd

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
)

// kubeBinaryName is subnetd built with its Kubernetes API mode, installed
// next to subnetd. The client-go packages that mode needs cost every node
// about 5 MB of resident memory just by being linked (13.2 -> 18.5 MB with
// etcd unreachable), also the nodes that lease in etcd; so subnetd is built
// without them (tag nokube) and, given --kube-subnet-mgr, becomes
// subnetd-kube with the same command line.
const kubeBinaryName = "subnetd-kube"

// defaultKubePrefix is flanneld's default --kube-annotation-prefix
// (kube.DefaultPrefix, which this build may not link; a test compares them).
const defaultKubePrefix = "flannel.alpha.coreos.com"

// kubeSource is the Kubernetes API mode; nil in the build without it.
type kubeSource struct {
	open     func(ctx context.Context, cfg *Config, ul underlay, log *slog.Logger) (source, error)
	validate func(*Config) error
}

var kubeMode *kubeSource

// handOverKube replaces this process with subnetd-kube, found next to this
// executable, when this build has no Kubernetes API mode. It returns only
// on failure.
func handOverKube(args []string) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("--kube-subnet-mgr is served by %s next to subnetd, but subnetd cannot tell where it is: %w", kubeBinaryName, err)
	}
	bin := filepath.Join(filepath.Dir(exe), kubeBinaryName)
	if err := syscall.Exec(bin, append([]string{bin}, args...), os.Environ()); err != nil {
		return fmt.Errorf("--kube-subnet-mgr is served by %s, which must be installed next to subnetd (make install does): %w", bin, err)
	}
	return nil
}
