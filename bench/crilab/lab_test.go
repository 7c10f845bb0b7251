package crilab

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cnisuite/cni/bench/labkit"
	"github.com/cnisuite/cni/internal/testutil"
	kubetest "github.com/cnisuite/cni/test/kube"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// TestCRILab runs the Request named by $CNIBENCH_CRILAB and writes its
// Result; Run starts it (go run ./bench).
func TestCRILab(t *testing.T) {
	var req Request
	if ok, err := labkit.ReadRequest(EnvRequest, &req); !ok {
		t.Skip("run by the bench (`go run ./bench`), which sets " + EnvRequest)
	} else if err != nil {
		t.Fatal(err)
	}
	// The bench's SIGTERM ends the run under way; the cleanups then stop
	// every process and delete every namespace.
	ctx, stop := signal.NotifyContext(t.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	pause, _, err := testutil.BuildTestImages(filepath.Join(req.Dir, "images"))
	if err != nil {
		t.Fatal(err)
	}
	nodes := make([]*kubetest.Node, len(req.Sides))
	res := Result{Sides: make([]Times, len(req.Sides))}
	for k, s := range req.Sides {
		nodes[k] = startNode(t, s, pause, filepath.Join(req.Dir, fmt.Sprintf("side%d", k)))
		res.Sides[k].Name = s.Name
		if _, err := nodes[k].CyclePod(ctx, nodes[k].PodConfig(fmt.Sprintf("warm-%d", k))); err != nil {
			t.Fatalf("%s: %v", s.Name, err)
		}
	}
	port := &runtimeapi.PortMapping{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 8080, HostPort: HostPort}
	for i := range req.Pods {
		for j := range 2 * len(nodes) {
			k := j % len(nodes)
			if i%2 == 1 { // ABBA: drift on the machine hits both sides
				k = len(nodes) - 1 - k
			}
			cycle, cfg := &res.Sides[k].Plain, nodes[k].PodConfig(fmt.Sprintf("pod-%d", i))
			if j >= len(nodes) {
				cycle, cfg = &res.Sides[k].HostPort, nodes[k].PodConfig(fmt.Sprintf("pod-%d-hostport", i), port)
			}
			pt, err := nodes[k].CyclePod(ctx, cfg)
			if err != nil {
				t.Fatalf("%s: %v", req.Sides[k].Name, err)
			}
			cycle.Run, cycle.Stop, cycle.Remove = append(cycle.Run, ms(pt.Run)), append(cycle.Stop, ms(pt.Stop)), append(cycle.Remove, ms(pt.Remove))
		}
	}
	if err := labkit.WriteJSON(req.Out, res); err != nil {
		t.Fatal(err)
	}
}

// startNode starts a node whose containerd runs the side's plugins with
// Conflist.
func startNode(t *testing.T, s Side, pause testutil.Image, dir string) *kubetest.Node {
	confDir := filepath.Join(dir, "net.d")
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(confDir, "10-cri-bench.conflist"), []byte(Conflist), 0o644); err != nil {
		t.Fatal(err)
	}
	ns := netnstest.New(t, "cribk-n")
	ns.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	return kubetest.StartNode(t, kubetest.NodeOptions{NS: ns, PluginDir: s.PluginDir, ConfDir: confDir, Pause: pause})
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
