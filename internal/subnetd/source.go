package subnetd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/overlay"
	"github.com/cnisuite/cni/pkg/regfile"
	"github.com/cnisuite/cni/pkg/subnet"
	"github.com/cnisuite/cni/pkg/subnet/envfile"
)

// source is the source of leases chosen at start, with what run needs
// around it.
type source struct {
	subnet.Source
	store   string // what it talks to, for messages: "etcd" or "the Kubernetes API"
	id      string // the node's identity: --node-id's, or its Node's name
	network subnet.Config
	plane   plane
	close   func()
}

func openSource(ctx context.Context, cfg *Config, ul underlay, log *slog.Logger, cancel context.CancelCauseFunc) (source, error) {
	if cfg.KubeSubnetMgr {
		return kubeMode.open(ctx, cfg, ul, log)
	}
	return openEtcd(ctx, cfg, ul, log, cancel)
}

// openEtcd leases in etcd: --etcd-endpoints, or the embedded one.
func openEtcd(ctx context.Context, cfg *Config, ul underlay, log *slog.Logger, cancel context.CancelCauseFunc) (source, error) {
	hint := identityHint(cfg.NodeID, cfg.DataDir)
	id, err := nodeID(cfg.NodeID, cfg.DataDir)
	if err != nil {
		return source{}, err
	}
	inst, err := instanceOf(cfg.DataDir)
	if err != nil {
		return source{}, err
	}
	cfg.NodeID = id // resolved: the registry derives its etcd lease's ID from it
	reg, closeReg, err := openRegistry(cfg, log, cancel)
	if err != nil {
		return source{}, err
	}
	netCfg, err := loadNetConfig(ctx, reg, cfg.NetConfig, log)
	if err != nil {
		closeReg()
		return source{}, err
	}
	pl, err := newPlane(netCfg.Backend, ul, id, log)
	if err != nil {
		closeReg()
		return source{}, err
	}
	m, err := newManager(cfg, reg, netCfg, id, ul, pl.Backend, log)
	if err != nil {
		closeReg()
		return source{}, err
	}
	m.Instance, m.IdentityHint = inst, hint
	return source{Source: m, store: "etcd", id: id, network: netCfg, plane: pl, close: closeReg}, nil
}

// newManager builds the lease manager with what this node publishes.
func newManager(cfg *Config, reg subnet.Registry, nc subnet.Config, id string, ul underlay, be overlay.Backend, log *slog.Logger) (*subnet.Manager, error) {
	attrs, err := nodeAttrs(nc, id, ul, be)
	if err != nil {
		return nil, err
	}
	m := &subnet.Manager{Registry: reg, Config: nc, Node: attrs, RenewMargin: time.Duration(cfg.RenewMargin) * time.Minute,
		Resync: cfg.ResyncInterval, Log: log}
	if prev, err := envfile.Read(cfg.SubnetFile); err == nil {
		m.Previous = subnet.Subnets{V4: prev.Subnet.Masked(), V6: prev.IPv6Subnet.Masked()}
	}
	return m, nil
}

// readNetConfig reads and validates a network config file given by flag.
func readNetConfig(flag, path string) ([]byte, subnet.Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, subnet.Config{}, fmt.Errorf("%s: %w", flag, err)
	}
	c, err := subnet.ParseConfig(raw)
	if err != nil {
		return nil, subnet.Config{}, fmt.Errorf("%s %s: %w", flag, path, err)
	}
	return raw, c, nil
}

// nodeAttrs is what this node publishes in its lease: its public
// addresses of the network's families, and the backend's data.
func nodeAttrs(nc subnet.Config, id string, ul underlay, be overlay.Backend) (subnet.Attrs, error) {
	attrs := subnet.Attrs{BackendType: nc.Backend.Type, NodeID: id}
	v4, v6 := backendData(nc.Backend.VNI, be.VtepMAC(family.IPv4)), backendData(nc.Backend.VNI, be.VtepMAC(family.IPv6))
	if nc.EnableIPv4 {
		if !ul.public[family.IPv4].IsValid() {
			return subnet.Attrs{}, fmt.Errorf("interface %s has no IPv4 address for the IPv4 network; pass --public-ip or --iface", ul.name)
		}
		attrs.PublicIP, attrs.BackendData = ul.public[family.IPv4], v4
	}
	if nc.EnableIPv6 {
		if !ul.public[family.IPv6].IsValid() {
			return subnet.Attrs{}, fmt.Errorf("interface %s has no global IPv6 address for the IPv6 network; add one or pass --iface", ul.name)
		}
		attrs.PublicIPv6, attrs.BackendV6Data = ul.public[family.IPv6], v6
	}
	return attrs, nil
}

// backendData is a family's BackendData in the lease: the VNI and MAC of
// this node's VTEP (flannel's vxlan data), or nothing for a backend without
// one.
func backendData(vni int, mac net.HardwareAddr) json.RawMessage {
	if mac == nil {
		return nil
	}
	d, _ := json.Marshal(subnet.VXLANData{VNI: vni, VtepMAC: mac.String()})
	return d
}

// instanceOf tells this subnetd apart from another machine's under the same
// node identity: a random token kept in the data directory (the same after
// a restart or a reboot, so a restarted run takes its identity back at
// once) and the kernel's boot ID (which a machine cloned with the data
// directory does not share).
func instanceOf(dataDir string) (subnet.Instance, error) {
	path := filepath.Join(dataDir, "instance-id")
	b, _, err := regfile.Read(path, 256, regfile.NoFollow)
	token := strings.TrimSpace(string(b))
	if err != nil || token == "" {
		buf := make([]byte, 16)
		_, _ = rand.Read(buf)
		token = hex.EncodeToString(buf)
		if err := regfile.Replace(path, []byte(token+"\n"), 0o600); err != nil {
			return subnet.Instance{}, fmt.Errorf("keeping this run's instance token: %w", err)
		}
	}
	boot, _ := os.ReadFile("/proc/sys/kernel/random/boot_id") // without it, a cloned data directory goes unnoticed
	return subnet.Instance{Token: token, Boot: strings.TrimSpace(string(boot))}, nil
}

// identityHint is the fix a node refused for its identity is told, by
// where the identity came from: --node-id (flag), else the data directory,
// which keeps what was taken from /etc/machine-id.
func identityHint(flag, dataDir string) string {
	if flag != "" {
		return fmt.Sprintf("fix: --node-id %s is given to another node too; give each node a --node-id of its own", flag)
	}
	return fmt.Sprintf("fix: give this node an identity of its own: start it with --node-id set to a name of its own, "+
		"or give it a new /etc/machine-id (rm /etc/machine-id && systemd-machine-id-setup) and delete %s, "+
		"where subnetd keeps the identity it took from /etc/machine-id", filepath.Join(dataDir, "node-id"))
}
