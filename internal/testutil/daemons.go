package testutil

import (
	"fmt"
	"os/exec"
)

// BuildDaemons builds the node daemons into dir as `make build` installs
// them: subnetd without the Kubernetes API mode (tag nokube), subnetd-kube
// with it, which subnetd becomes given --kube-subnet-mgr, and subnetd-etcd,
// its embedded etcd.
func BuildDaemons(dir string) error {
	builds := [][]string{
		{"-tags", "nokube", "-o", dir + "/subnetd", "github.com/cnisuite/cni/daemon/subnetd"},
		{"-o", dir + "/subnetd-kube", "github.com/cnisuite/cni/daemon/subnetd"},
		{"-o", dir + "/", "github.com/cnisuite/cni/daemon/subnetd-etcd"},
	}
	for _, args := range builds {
		if out, err := exec.Command("go", append([]string{"build"}, args...)...).CombinedOutput(); err != nil {
			return fmt.Errorf("go build %v: %w\n%s", args, err, out)
		}
	}
	return nil
}
