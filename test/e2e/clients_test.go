package e2e

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/types/create"

	"github.com/cnisuite/cni/pkg/netns"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// client drives a conflist the way a runtime or an operator does, with the
// plugins running inside the node namespace. Each keeps its cache and the
// IPAM state in the test's temporary directories.
type client interface {
	add(t *testing.T, pod *netnstest.NS) (*current.Result, error)
	check(t *testing.T, pod *netnstest.NS) error
	del(t *testing.T, pod *netnstest.NS) error
	gcAll(t *testing.T) error // GC with no attachment left valid
	status(t *testing.T) error
	containerID(pod *netnstest.NS) string
	dataDir() string  // host-local's dataDir
	cacheDir() string // the client's cache of results
}

// newClient returns the client of the given kind for the conflist in file.
func newClient(t *testing.T, kind string, node *netnstest.NS, file string) client {
	t.Helper()
	switch kind {
	case "libcni":
		return newLibcniClient(t, node, file)
	case "cnitool":
		return newCnitoolClient(t, node, file)
	}
	t.Fatalf("unknown client %q", kind)
	return nil
}

var clientKinds = []string{"libcni", "cnitool"}

// libcniClient is a runtime's view: libcni in-process, in the node namespace.
type libcniClient struct {
	node        *netnstest.NS
	list        *libcni.NetworkConfigList
	cni         *libcni.CNIConfig
	data, cache string
}

func newLibcniClient(t *testing.T, node *netnstest.NS, file string) *libcniClient {
	return newLibcniClientIn(t, node, file, binDir)
}

// newLibcniClientIn finds the plugins in cniPath.
func newLibcniClientIn(t *testing.T, node *netnstest.NS, file, cniPath string) *libcniClient {
	c := &libcniClient{node: node, data: t.TempDir(), cache: t.TempDir()}
	c.list = loadConfList(t, file, c.data)
	c.cni = libcni.NewCNIConfigWithCacheDir([]string{cniPath}, c.cache, nil)
	return c
}

// loadConfList reads a conflist and points every ipam section at dataDir,
// so that nothing is written under the machine's /var/lib/cni.
func loadConfList(t *testing.T, file, dataDir string) *libcni.NetworkConfigList {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var conf map[string]any
	if err := json.Unmarshal(raw, &conf); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	for _, p := range conf["plugins"].([]any) {
		if ipam, ok := p.(map[string]any)["ipam"].(map[string]any); ok {
			ipam["dataDir"] = dataDir
		}
	}
	keepTuningIn(conf, filepath.Join(dataDir, "tuning"))
	list, err := libcni.NetworkConfFromBytes(jsonConf(t, conf))
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return list
}

// keepTuningIn points the conflist's tuning plugins at dir for their saved
// state, instead of the machine's /run/cni/tuning.
func keepTuningIn(conf map[string]any, dir string) {
	for _, p := range conf["plugins"].([]any) {
		if p := p.(map[string]any); p["type"] == "tuning" {
			p["dataDir"] = dir
		}
	}
}

func (c *libcniClient) rt(pod *netnstest.NS) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: c.containerID(pod), NetNS: pod.Path, IfName: "eth0"}
}

// inNode runs fn with the test's thread in the node namespace: the plugins
// libcni starts from there run in it too.
func (c *libcniClient) inNode(t *testing.T, fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	return netns.Do(c.node.Path, func() error { return fn(ctx) })
}

func (c *libcniClient) add(t *testing.T, pod *netnstest.NS) (res *current.Result, err error) {
	err = c.inNode(t, func(ctx context.Context) error {
		r, err := c.cni.AddNetworkList(ctx, c.list, c.rt(pod))
		if err != nil {
			return err
		}
		res, err = current.NewResultFromResult(r)
		return err
	})
	return res, err
}

func (c *libcniClient) check(t *testing.T, pod *netnstest.NS) error {
	return c.inNode(t, func(ctx context.Context) error { return c.cni.CheckNetworkList(ctx, c.list, c.rt(pod)) })
}

func (c *libcniClient) del(t *testing.T, pod *netnstest.NS) error {
	return c.inNode(t, func(ctx context.Context) error { return c.cni.DelNetworkList(ctx, c.list, c.rt(pod)) })
}

func (c *libcniClient) gcAll(t *testing.T) error { return c.gc(t, nil) }

// gc keeps the given pods' attachments and collects the rest.
func (c *libcniClient) gc(t *testing.T, keep []*netnstest.NS) error {
	args := &libcni.GCArgs{ValidAttachments: []types.GCAttachment{}}
	for _, p := range keep {
		args.ValidAttachments = append(args.ValidAttachments, types.GCAttachment{ContainerID: c.containerID(p), IfName: "eth0"})
	}
	return c.inNode(t, func(ctx context.Context) error { return c.cni.GCNetworkList(ctx, c.list, args) })
}

func (c *libcniClient) status(t *testing.T) error {
	return c.inNode(t, func(ctx context.Context) error { return c.cni.GetStatusNetworkList(ctx, c.list) })
}

func (c *libcniClient) containerID(pod *netnstest.NS) string { return "e2e-" + pod.Name }
func (c *libcniClient) dataDir() string                      { return c.data }
func (c *libcniClient) cacheDir() string                     { return c.cache }

// cnitoolClient is an operator's view: cnitool inside the node namespace,
// with the conflist unchanged in NETCONFPATH. cnitool has no knob for its
// cache, so each run gets a private mount namespace where /var/lib is a
// temporary directory: its cache and host-local's default dataDir land there.
type cnitoolClient struct {
	node            *netnstest.NS
	tool            string
	network         string
	confDir, varLib string
}

func newCnitoolClient(t *testing.T, node *netnstest.NS, file string) *cnitoolClient {
	list, err := libcni.NetworkConfFromFile(file)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	c := &cnitoolClient{node: node, tool: cnitool(t), network: list.Name, confDir: t.TempDir(), varLib: t.TempDir()}
	var conf map[string]any
	if err := json.Unmarshal(list.Bytes, &conf); err != nil {
		t.Fatal(err)
	}
	keepTuningIn(conf, "/var/lib/cni/tuning") // cnitool's private /var/lib
	if err := os.WriteFile(filepath.Join(c.confDir, filepath.Base(file)), jsonConf(t, conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return c
}

// mountVarLib is run by sh in cnitool's private mount namespace: $0 is the
// directory to see as /var/lib, the rest the command.
const mountVarLib = `mount --bind "$0" /var/lib && exec "$@"`

func (c *cnitoolClient) run(t *testing.T, verb, netnsPath string) (string, error) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "--mount", "--propagation", "private", "--",
		"sh", "-c", mountVarLib, c.varLib, "ip", "netns", "exec", c.node.Name, c.tool, verb, c.network, netnsPath)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "CNI_PATH=" + binDir, "NETCONFPATH=" + c.confDir}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("cnitool %s %s: %w\n%s%s", verb, netnsPath, err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.String(), nil
}

func (c *cnitoolClient) add(t *testing.T, pod *netnstest.NS) (*current.Result, error) {
	out, err := c.run(t, "add", pod.Path)
	if err != nil {
		return nil, err
	}
	r, err := create.CreateFromBytes([]byte(out))
	if err != nil {
		return nil, fmt.Errorf("cnitool add printed %q: %w", out, err)
	}
	return current.NewResultFromResult(r)
}

func (c *cnitoolClient) check(t *testing.T, pod *netnstest.NS) error {
	_, err := c.run(t, "check", pod.Path)
	return err
}

func (c *cnitoolClient) del(t *testing.T, pod *netnstest.NS) error {
	_, err := c.run(t, "del", pod.Path)
	return err
}

// gcAll: cnitool passes no valid attachments, so GC deletes every cached one.
func (c *cnitoolClient) gcAll(t *testing.T) error {
	_, err := c.run(t, "gc", noNetns)
	return err
}

func (c *cnitoolClient) status(t *testing.T) error {
	_, err := c.run(t, "status", noNetns)
	return err
}

// containerID is how cnitool names an attachment: a hash of the netns path.
func (c *cnitoolClient) containerID(pod *netnstest.NS) string {
	sum := sha512.Sum512([]byte(pod.Path))
	return fmt.Sprintf("cnitool-%x", sum[:10])
}

func (c *cnitoolClient) dataDir() string  { return filepath.Join(c.varLib, "cni", "networks") }
func (c *cnitoolClient) cacheDir() string { return filepath.Join(c.varLib, "cni") }
