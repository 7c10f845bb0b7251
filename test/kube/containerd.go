package kubetest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// containerdConfig is Debian's containerd 1.6 as a node runs it, but for:
// the native snapshotter (nothing to set up, and the images are tiny);
// restrict_oom_score_adj, because these machines refuse a negative
// oom_score_adj and runc then fails with "can't get final child's PID
// from pipe: EOF"; the sandbox image the test imported (no registry is
// reachable); and the plugins and conflists under test. Root, state and
// socket are containerd's defaults, private to the node's mount namespace.
// The opt plugin is off: it would make /opt/containerd on the machine's disk
// (the node shares the machine's /opt) for plugins that nothing here installs.
const containerdConfig = `version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.overlayfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.internal.v1.tracing", "io.containerd.internal.v1.opt"]
[grpc]
  address = %q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
    max_conf_num = 1
`

// startContainerd writes containerd's configuration, starts it and
// connects the CRI client.
func (n *Node) startContainerd(t testing.TB) {
	t.Helper()
	config := filepath.Join(n.dir, "containerd.toml")
	text := fmt.Sprintf(containerdConfig, containerdSocket, n.pause, n.pluginDir, n.confDir)
	if err := os.WriteFile(config, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	n.containerd.argv = []string{"containerd", "--config", config}
	// Reconnect within 50 ms of containerd listening, not after gRPC's
	// default backoff of a second or more: the tests wait for it.
	retry := grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, MaxDelay: time.Second},
		MinConnectTimeout: time.Second}
	conn, err := grpc.NewClient("unix://"+n.Path(containerdSocket),
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithConnectParams(retry))
	if err != nil {
		t.Fatal(err)
	}
	n.conn, n.CRI = conn, runtimeapi.NewRuntimeServiceClient(conn)
	n.runContainerd(t)
}

// runContainerd starts containerd and waits until its CRI answers.
func (n *Node) runContainerd(t testing.TB) {
	t.Helper()
	if err := n.containerd.startWith(n.Enter(), n.NS.Name); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "containerd's CRI", 30*time.Second, []*process{n.containerd}, func() error {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		_, err := n.CRI.Version(ctx, &runtimeapi.VersionRequest{})
		return err
	})
}

// RestartContainerd stops containerd (SIGTERM) and starts it again with
// the same configuration, as a node's runtime upgrade does: pods keep
// running in their shims meanwhile. It returns once the CRI answers.
func (n *Node) RestartContainerd(t testing.TB) {
	t.Helper()
	n.containerd.stop(10 * time.Second)
	n.runContainerd(t)
}

// ImportImage imports an image archive (an OCI image layout in a tar, as
// internal/ociimage writes) into containerd's k8s.io namespace, unpacked
// for the snapshotter the CRI uses, as a kubelet would find a pulled one.
func (n *Node) ImportImage(t testing.TB, archive string) {
	t.Helper()
	n.Run(t, "ctr", "--address", containerdSocket, "--namespace", "k8s.io",
		"images", "import", "--snapshotter", "native", archive)
}
