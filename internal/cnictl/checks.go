package cnictl

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cnisuite/cni/pkg/ipam"
	"github.com/cnisuite/cni/pkg/ipam/stale"
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/regfile"
	"github.com/cnisuite/cni/pkg/subnet/envfile"
)

// conflist is one network configuration file, reduced to what doctor needs.
type conflist struct {
	file    string
	Name    string `json:"name"`
	Type    string `json:"type"` // a single .conf
	Plugins []struct {
		Type     string                `json:"type"`
		IPAM     struct{ Type string } `json:"ipam"`
		Delegate struct{ Type string } `json:"delegate"`
	} `json:"plugins"`
	IPAM struct{ Type string } `json:"ipam"`
}

// types lists the binaries the configuration needs, delegates included: the
// flannel plugin execs bridge (or its delegate's type) and host-local.
func (c conflist) types() []string {
	var out []string
	add := func(ts ...string) {
		for _, t := range ts {
			if t != "" && !slices.Contains(out, t) {
				out = append(out, t)
			}
		}
	}
	add(c.Type, c.IPAM.Type)
	for _, p := range c.Plugins {
		add(p.Type, p.IPAM.Type)
		if p.Type == "flannel" {
			add(cmp(p.Delegate.Type, "bridge"), "host-local")
		}
	}
	if c.Type == "flannel" {
		add("bridge", "host-local")
	}
	return out
}

func cmp(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func (n *node) flannel() bool {
	return slices.ContainsFunc(n.confs, func(c conflist) bool { return slices.Contains(c.types(), "flannel") })
}

// flannelNetwork reports whether the network of that name is flannel's.
func (n *node) flannelNetwork(name string) bool {
	return slices.ContainsFunc(n.confs, func(c conflist) bool { return c.Name == name && slices.Contains(c.types(), "flannel") })
}

// checkConfig loads the files kubelet would (libcni: .conf, .conflist, .json).
func checkConfig(n *node) []Finding {
	entries, err := os.ReadDir(n.confDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return []Finding{{Severity: Error, Message: "cannot read the CNI configuration directory", Evidence: []string{err.Error()},
			Fix: "check the permissions of " + n.confDir + " and pass the directory kubelet uses with --cni-conf-dir"}}
	}
	var fds []Finding
	for _, e := range entries {
		if e.IsDir() || !slices.Contains([]string{".conf", ".conflist", ".json"}, filepath.Ext(e.Name())) {
			continue
		}
		p := filepath.Join(n.confDir, e.Name())
		c := conflist{file: p}
		data, _, err := regfile.Read(p, netconf.MaxConfSize, regfile.Follow)
		if err == nil {
			err = json.Unmarshal(data, &c)
		}
		if err != nil || c.Name == "" || c.Type == "" && len(c.Plugins) == 0 {
			fds = append(fds, Finding{Severity: Error, Message: p + " is not a valid network configuration; kubelet skips it",
				Evidence: []string{fmt.Sprint(cmp(errString(err), "no name or no plugins"))},
				Fix:      "fix or remove " + p + "; reinstall the suite's 10-flannel.conflist if it was that file"})
			continue
		}
		n.confs = append(n.confs, c)
	}
	if len(n.confs) == 0 {
		return append(fds, Finding{Severity: Error,
			Message:  "no network configuration: kubelet reports \"no networks found in " + n.confDir + "\" and no pod gets a network",
			Evidence: []string{fmt.Sprintf("%s holds no .conf, .conflist or .json file that parses", n.confDir)},
			Fix:      "install the suite's configuration (e.g. 10-flannel.conflist) into " + n.confDir + "; the node becomes Ready once kubelet sees it"})
	}
	first := n.confs[0] // kubelet uses the first file in name order
	return append(fds, ok(fmt.Sprintf("kubelet uses network %q from %s", first.Name, first.file))...)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// checkPlugins looks for every binary the configurations name.
func checkPlugins(n *node) []Finding {
	var fds []Finding
	for _, c := range n.confs {
		for _, t := range c.types() {
			p := filepath.Join(n.binDir, t)
			st, err := os.Stat(p)
			switch {
			case err != nil:
				fds = append(fds, Finding{Severity: Error,
					Message:  fmt.Sprintf("network %q needs plugin %q, which is not in %s: every pod ADD fails with: failed to find plugin %q", c.Name, t, n.binDir, t),
					Evidence: []string{c.file + " names type " + t, err.Error()},
					Fix:      fmt.Sprintf("install the suite's %s binary as %s (mode 0755)", t, p)})
			case st.Mode()&0o111 == 0:
				fds = append(fds, Finding{Severity: Error, Message: fmt.Sprintf("plugin %s is not executable", p),
					Evidence: []string{st.Mode().String() + " " + p}, Fix: "chmod 0755 " + p})
			}
		}
	}
	if len(fds) == 0 && len(n.confs) > 0 {
		return ok("every plugin the configuration names is in " + n.binDir)
	}
	return fds
}

// checkSubnetEnv reads subnetd's lease file when the flannel plugin needs it.
func checkSubnetEnv(n *node) []Finding {
	env, err := envfile.Read(n.subnetFile)
	switch {
	case errors.Is(err, fs.ErrNotExist) && !n.flannel():
		return nil
	case errors.Is(err, fs.ErrNotExist):
		return []Finding{{Severity: Error,
			Message:  n.subnetFile + " does not exist: subnetd on THIS node has not written its lease, so every pod ADD fails",
			Evidence: []string{err.Error()},
			Fix: "check subnetd on this node (`systemctl status subnetd`, or `kubectl -n kube-flannel get pods -o wide` for its pod " +
				"on this node, then its logs); it writes the file once it holds a lease. Never copy subnet.env from another node: " +
				"two nodes would share one subnet"}}
	case err != nil:
		return []Finding{{Severity: Error, Message: n.subnetFile + " is malformed; the flannel plugin refuses it",
			Evidence: []string{err.Error()},
			Fix:      "restart subnetd on this node so it rewrites the file from its lease; do not edit it by hand"}}
	}
	n.env = &env
	return ok("subnet.env gives this node "+env.Subnet.String()+" in "+env.Network.String(), fmt.Sprintf("FLANNEL_MTU=%d", env.MTU))
}

// checkReady asks subnetd whether it holds a lease and watches the others.
func checkReady(n *node) []Finding {
	if !n.flannel() {
		return nil
	}
	u := strings.TrimSuffix(n.healthz, "/") + "/readyz"
	resp, err := n.client.Get(u)
	if err != nil {
		return []Finding{{Severity: Error, Message: "subnetd does not answer on " + n.healthz + ": it is not running on this node",
			Evidence: []string{err.Error()},
			Fix:      "start subnetd on this node (`systemctl start subnetd` or its DaemonSet pod) and read its log for why it stopped; pass its address with --healthz if it listens elsewhere"}}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	why := strings.TrimSpace(string(body))
	if resp.StatusCode != http.StatusOK {
		return []Finding{{Severity: Error, Message: "subnetd is running but not ready: " + why,
			Evidence: []string{fmt.Sprintf("GET %s: %s %s", u, resp.Status, why)},
			Fix:      "follow the reason above: subnetd's log on this node says what it waits for (etcd or the API server, its lease)"}}
	}
	return ok("subnetd is ready", "GET "+u+": "+resp.Status)
}

// checkIPAM surveys every host-local network: full stores stop pod starts.
func checkIPAM(n *node) []Finding {
	nets, err := listNetworks(n.dataDir)
	if err != nil {
		return nil // no store yet: host-local creates it at the first pod
	}
	var fds []Finding
	for _, name := range nets {
		vs, err := survey(n.dataDir, name, nil)
		if err != nil {
			fds = append(fds, Finding{Severity: Warn, Message: "cannot fully survey host-local network " + name,
				Evidence: []string{err.Error()}, Fix: "`cnictl ipam ls " + name + "` lists what can be read"})
		}
		fds = append(fds, judgeStore(n, name, vs)...)
	}
	return fds
}

// judgeStore compares a network's reservations with its room: the subnet of
// subnet.env (what the flannel plugin hands host-local) for a flannel
// network; other networks are only counted.
func judgeStore(n *node, name string, vs []stale.Verdict) []Finding {
	gone := slices.DeleteFunc(slices.Clone(vs), func(v stale.Verdict) bool { return v.State != stale.Gone })
	ev := []string{fmt.Sprintf("%d reservations in %s, %d of them owned by containers that are gone", len(vs), filepath.Join(n.dataDir, name), len(gone))}
	room := uint64(0)
	if n.env != nil && n.env.Subnet.IsValid() && n.flannelNetwork(name) {
		if r, err := (ipam.RangeConfig{Subnet: n.env.Subnet.Masked().String()}).Parse(); err == nil {
			room = r.Size() // the gateway excluded
			ev = append(ev, fmt.Sprintf("FLANNEL_SUBNET %s has room for %d pods", n.env.Subnet, room))
		}
	}
	full := room > 0 && uint64(len(vs)) >= room
	near := room > 0 && uint64(len(vs))*10 >= room*9
	ev = append(ev, leaked(gone)...)
	gc := "`cnictl ipam gc " + name + "` (try --dry-run first) releases the addresses of gone containers"
	switch {
	case full && len(gone) > 0:
		return []Finding{{Severity: Error, Message: "network " + name + " is out of addresses: pods fail with \"no IP addresses available in network: " + name + "\"",
			Evidence: ev, Fix: gc}}
	case full:
		return []Finding{{Severity: Error, Message: "network " + name + " is out of addresses and every owner is alive or unproven",
			Evidence: ev, Fix: "run fewer pods on this node or give nodes a larger subnet (SubnetLen in the network config); `cnictl ipam ls " + name + "` shows the owners"}}
	case near:
		return []Finding{{Severity: Warn, Message: "network " + name + " is nearly out of addresses", Evidence: ev, Fix: gc}}
	case len(gone) > 0:
		return []Finding{{Severity: Warn, Message: fmt.Sprintf("network %s holds %d addresses of containers that are gone (their DEL never came): %s",
			name, len(gone), gone[0].Addr), Evidence: ev, Fix: gc + "; the runtime's GC (CNI 1.1) or host-local itself, when the range runs out, would too"}}
	}
	return ok("host-local network "+name+" has room", ev...)
}

// maxLeaked bounds the leaked addresses a finding lists one by one.
const maxLeaked = 10

// leaked names the reservations of gone owners: address, owner, and why
// it is known gone.
func leaked(gone []stale.Verdict) []string {
	var out []string
	for i, v := range gone {
		if i == maxLeaked {
			out = append(out, fmt.Sprintf("and %d more: `cnictl ipam ls` lists them all", len(gone)-maxLeaked))
			break
		}
		out = append(out, fmt.Sprintf("leaked %s: container %s %s, %s", v.Addr, v.Owner.ContainerID, v.Owner.IfName, v.Reason))
	}
	return out
}
