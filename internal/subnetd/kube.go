//go:build !nokube

package subnetd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"time"

	"k8s.io/klog/v2"

	"github.com/cnisuite/cni/pkg/subnet/kube"
)

// This file is the Kubernetes API mode, left out of the build installed as
// subnetd (tag nokube), which hands that mode over to this one, installed as
// subnetd-kube (see handover.go).
func init() { kubeMode = &kubeSource{open: openKube, validate: (*Config).validateKube} }

const kubeAPI = "the Kubernetes API"

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
	pl, err := newPlane(netCfg.Backend, ul, name, log)
	if err != nil {
		return source{}, err
	}
	attrs, err := nodeAttrs(netCfg, name, ul, pl.Backend)
	if err != nil {
		return source{}, err
	}
	src, err := kube.New(kube.Options{API: api, NodeName: name, Prefix: cfg.KubeAnnotationPrefix, Network: netCfg, Node: attrs,
		SetNodeNetworkUnavailable: cfg.SetNodeNetworkUnavailable, Timeout: cfg.EtcdTimeout, Log: log})
	if err != nil {
		return source{}, err
	}
	go src.Run(ctx)
	return source{Source: src, store: kubeAPI, id: name, network: netCfg, plane: pl, close: func() {}}, nil
}

// validateKube checks the flags of the Kubernetes API mode.
func (c *Config) validateKube() error {
	var errs []error
	if err := kube.CheckPrefix(c.KubeAnnotationPrefix); err != nil {
		errs = append(errs, fmt.Errorf("--kube-annotation-prefix: %w", err))
	}
	if c.NetConfigPath == "" {
		errs = append(errs, errors.New("--net-config-path must not be empty with --kube-subnet-mgr"))
	}
	if c.KubeAPIURL != "" {
		if u, err := url.Parse(c.KubeAPIURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			errs = append(errs, fmt.Errorf("--kube-api-url %q: want a URL like https://HOST:6443", c.KubeAPIURL))
		}
	}
	return errors.Join(errs...)
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
