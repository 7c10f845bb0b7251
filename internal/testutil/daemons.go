package testutil

import (
	"fmt"
	"os/exec"
)

// The node daemons' commands, for tests that build them.
const (
	SubnetdPackage     = "github.com/cnisuite/cni/cmd/subnetd"
	SubnetdEtcdPackage = "github.com/cnisuite/cni/cmd/subnetd-etcd"
)

// BuildDaemons builds the node daemons into dir as `make build` installs
// them: subnetd without the Kubernetes API mode (tag nokube), subnetd-kube
// with it, which subnetd becomes given --kube-subnet-mgr, and subnetd-etcd,
// its embedded etcd.
func BuildDaemons(dir string) error {
	builds := [][]string{
		{"-tags", "nokube", "-o", dir + "/subnetd", SubnetdPackage},
		{"-o", dir + "/subnetd-kube", SubnetdPackage},
		{"-o", dir + "/", SubnetdEtcdPackage},
	}
	for _, args := range builds {
		if out, err := exec.Command("go", append([]string{"build"}, args...)...).CombinedOutput(); err != nil {
			return fmt.Errorf("go build %v: %w\n%s", args, err, out)
		}
	}
	return nil
}
