package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

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
	overlay *overlay
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
	id, err := nodeID(cfg.NodeID, cfg.DataDir)
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
	ov := newOverlay(netCfg.Backend, ul, id, log)
	m, err := newManager(cfg, reg, netCfg, id, ul, ov, log)
	if err != nil {
		closeReg()
		return source{}, err
	}
	return source{Source: m, store: "etcd", id: id, network: netCfg, overlay: ov, close: closeReg}, nil
}

// newManager builds the lease manager with what this node publishes.
func newManager(cfg *Config, reg subnet.Registry, nc subnet.Config, id string, ul underlay, ov *overlay, log *slog.Logger) (*subnet.Manager, error) {
	attrs, err := nodeAttrs(nc, id, ul, ov)
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
// addresses of the network's families, and the overlay's backend data.
func nodeAttrs(nc subnet.Config, id string, ul underlay, ov *overlay) (subnet.Attrs, error) {
	attrs := subnet.Attrs{BackendType: nc.Backend.Type, NodeID: id}
	v4, v6 := ov.backendData()
	if nc.EnableIPv4 {
		if !ul.publicV4.IsValid() {
			return subnet.Attrs{}, fmt.Errorf("interface %s has no IPv4 address for the IPv4 network; pass --public-ip or --iface", ul.name)
		}
		attrs.PublicIP, attrs.BackendData = ul.publicV4, v4
	}
	if nc.EnableIPv6 {
		if !ul.publicV6.IsValid() {
			return subnet.Attrs{}, fmt.Errorf("interface %s has no global IPv6 address for the IPv6 network; add one or pass --iface", ul.name)
		}
		attrs.PublicIPv6, attrs.BackendV6Data = ul.publicV6, v6
	}
	return attrs, nil
}
