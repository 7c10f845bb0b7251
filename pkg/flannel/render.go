package flannel

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"

	"github.com/cnisuite/cni/pkg/subnet/envfile"
)

// delegateConf is a rendered delegate configuration, key by key.
type delegateConf map[string]json.RawMessage

// render completes the delegate block from subnet.env the way flannel's
// plugin does: name and cniVersion from the network; type bridge, ipMasq
// (not FLANNEL_IPMASQ: masquerade here only if the daemon does not), mtu
// and, for bridge, isGateway, each unless the block sets it; runtimeConfig
// passed on; ipam from the top-level "ipam" with host-local as type, one
// range set per family holding the node's subnet, and routes to the
// cluster networks after the ipam's own. An empty env (subnet.env gone at
// DEL time) gives ipam without ranges, which is enough for a release.
func render(c *NetConf, e envfile.Env) delegateConf {
	d := delegateConf(maps.Clone(c.Delegate))
	if d == nil {
		d = delegateConf{}
	}
	d.set("name", c.Name)
	d.set("cniVersion", c.CNIVersion)
	d.setDefault("type", c.delegateType)
	if e.MTU != 0 {
		d.setDefault("ipMasq", !e.IPMasq)
		d.setDefault("mtu", e.MTU)
	} else {
		d.setDefault("ipMasq", true) // unknown: let a DEL remove rules if there are any
	}
	if c.delegateType == "bridge" {
		d.setDefault("isGateway", true)
	}
	if c.RuntimeConfig != nil {
		d["runtimeConfig"] = c.RuntimeConfig
	}
	d.set("ipam", renderIPAM(c.IPAM, e))
	return d
}

func renderIPAM(base map[string]json.RawMessage, e envfile.Env) delegateConf {
	ipam := delegateConf(maps.Clone(base))
	if ipam == nil {
		ipam = delegateConf{}
	}
	ipam.setDefault("type", defaultIPAM)
	type rangeConf struct {
		Subnet string `json:"subnet"`
	}
	var ranges [][]rangeConf
	for _, sn := range []netip.Prefix{e.Subnet, e.IPv6Subnet} {
		if sn.IsValid() {
			ranges = append(ranges, []rangeConf{{Subnet: sn.Masked().String()}})
		}
	}
	if ranges != nil {
		ipam.set("ranges", ranges)
	}
	var routes []json.RawMessage
	_ = json.Unmarshal(base["routes"], &routes) // checked by loadConf
	for _, nw := range []netip.Prefix{e.Network, e.IPv6Network} {
		if nw.IsValid() {
			routes = append(routes, mustJSON(map[string]string{"dst": nw.Masked().String()}))
		}
	}
	if routes != nil {
		ipam.set("routes", routes)
	}
	return ipam
}

func (d delegateConf) set(key string, v any) { d[key] = mustJSON(v) }

// setDefault sets key unless the block sets it; null counts as unset.
func (d delegateConf) setDefault(key string, v any) {
	if !has(d, key) {
		d.set(key, v)
	}
}

// typ is the delegate's type, a string by construction.
func (d delegateConf) typ() string {
	var s string
	_ = json.Unmarshal(d["type"], &s)
	return s
}

// bytes is the configuration handed to the delegate and saved for DEL.
func (d delegateConf) bytes() []byte { return mustJSON(map[string]json.RawMessage(d)) }

// mustJSON marshals values that cannot fail: strings, numbers, booleans,
// maps and slices of those, and raw JSON that was parsed before.
func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("flannel: marshalling %T: %v", v, err))
	}
	return b
}

// parseDelegate reads a saved delegate configuration back.
func parseDelegate(data []byte) (delegateConf, error) {
	var d delegateConf
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, err
	}
	if t := d.typ(); t == "" {
		return nil, fmt.Errorf("no delegate type in the saved configuration")
	}
	return d, nil
}
