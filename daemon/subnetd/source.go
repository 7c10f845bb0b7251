package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"k8s.io/klog/v2"

	"github.com/cnisuite/cni/pkg/subnet"
	"github.com/cnisuite/cni/pkg/subnet/envfile"
	"github.com/cnisuite/cni/pkg/subnet/kube"
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

const kubeAPI = "the Kubernetes API"

func openSource(ctx context.Context, cfg *Config, ul underlay, log *slog.Logger, cancel context.CancelCauseFunc) (source, error) {
	if cfg.KubeSubnetMgr {
		return openKube(ctx, cfg, ul, log)
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

// openKube takes the subnets from the Node's pod CIDRs and publishes the
// lease as its annotations (--kube-subnet-mgr). The node is the Node's
// name; --node-id is not used.
func openKube(ctx context.Context, cfg *Config, ul underlay, log *slog.Logger) (source, error) {
	klog.SetSlogLogger(log) // client-go's lines (a watch lost) in subnetd's format
	_, netCfg, err := readNetConfig("--net-config-path", cfg.NetConfigPath)
	if err != nil {
		return source{}, err
	}
	restCfg, err := kube.RESTConfig(cfg.KubeAPIURL, cfg.Kubeconfig)
	if err != nil {
		return source{}, err
	}
	api, err := kube.NewREST(restCfg)
	if err != nil {
		return source{}, err
	}
	name, err := nodeName(ctx, api, cfg.EtcdTimeout, log)
	if err != nil {
		return source{}, err
	}
	ov := newOverlay(netCfg.Backend, ul, name, log)
	attrs, err := nodeAttrs(netCfg, name, ul, ov)
	if err != nil {
		return source{}, err
	}
	src, err := kube.New(kube.Options{API: api, NodeName: name, Prefix: cfg.KubeAnnotationPrefix, Network: netCfg, Node: attrs,
		SetNodeNetworkUnavailable: cfg.SetNodeNetworkUnavailable, Timeout: cfg.EtcdTimeout, Log: log})
	if err != nil {
		return source{}, err
	}
	go src.Run(ctx)
	return source{Source: src, store: kubeAPI, id: name, network: netCfg, overlay: ov, close: func() {}}, nil
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

// nodeName is this node's Node: NODE_NAME, else the node of the pod
// POD_NAMESPACE/POD_NAME, asked until the API server answers.
func nodeName(ctx context.Context, api *kube.REST, timeout time.Duration, log *slog.Logger) (string, error) {
	if name := os.Getenv("NODE_NAME"); name != "" {
		return name, nil
	}
	namespace, pod := os.Getenv("POD_NAMESPACE"), os.Getenv("POD_NAME")
	if namespace == "" || pod == "" {
		return "", errors.New("--kube-subnet-mgr needs this node's name: set NODE_NAME (in a DaemonSet: valueFrom.fieldRef.fieldPath spec.nodeName), or POD_NAME and POD_NAMESPACE")
	}
	for backoff := 200 * time.Millisecond; ; backoff = min(2*backoff, 10*time.Second) {
		callCtx, cancel := context.WithTimeout(ctx, timeout)
		name, err := api.PodNode(callCtx, namespace, pod)
		cancel()
		if err == nil {
			return name, nil
		}
		log.Error("finding this node's name failed; retrying", "error", err, "in", backoff)
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(backoff):
		}
	}
}
