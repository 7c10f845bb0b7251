package flannel

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"time"

	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/subnet/envfile"
)

// Defaults of flannel's plugin (flannel-io/cni-plugin), kept so that a
// node can switch between the two with its state.
const (
	defaultSubnetFile = envfile.DefaultPath
	// DefaultDataDir holds the saved delegate configurations when the
	// configuration names no dataDir.
	DefaultDataDir  = "/var/lib/cni/flannel"
	defaultDelegate = "bridge"
	defaultIPAM     = "host-local"
	// defaultWait covers the seconds between a node's boot (or a daemon
	// restart) and subnet.env being written, without holding a pod long.
	defaultWait = 5 * time.Second
	maxWait     = 2 * time.Minute // kubelet's default runtime request timeout
)

// NetConf is the flannel plugin's configuration: flannel's keys, plus
// subnetFileWait. The delegate and ipam sections stay raw, since they are
// another plugin's configuration that is only completed and passed on.
type NetConf struct {
	netconf.Base
	IPAM           map[string]json.RawMessage `json:"ipam,omitempty"`
	SubnetFile     string                     `json:"subnetFile"`
	DataDir        string                     `json:"dataDir"`
	Delegate       map[string]json.RawMessage `json:"delegate"`
	RuntimeConfig  json.RawMessage            `json:"runtimeConfig,omitempty"`
	SubnetFileWait string                     `json:"subnetFileWait,omitempty"`

	wait         time.Duration
	delegateType string
}

// loadConf parses and checks the configuration before anything is read or
// written, so that a bad one fails the same way whatever the node's state.
func loadConf(stdin []byte) (*NetConf, error) {
	c, err := decodeConf(stdin)
	if err != nil {
		return nil, err
	}
	return c, c.check()
}

// decodeConf reads the configuration and the keys every verb needs, but
// does not check the delegate and ipam blocks: a DEL replaying a saved
// configuration must work after the conflist was edited into a bad one.
func decodeConf(stdin []byte) (*NetConf, error) {
	c := &NetConf{}
	if err := netconf.Load(stdin, c); err != nil {
		return nil, err
	}
	if strings.Contains(c.Name, "/") || c.Name == "." || c.Name == ".." {
		return nil, netconf.Invalid("network name %q is used as a directory name; use letters, digits, '-', '_' or '.'", c.Name)
	}
	if c.SubnetFile == "" {
		c.SubnetFile = defaultSubnetFile
	}
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	if isNull(c.RuntimeConfig) {
		c.RuntimeConfig = nil
	}
	return c, nil
}

// check checks what decodeConf left: the wait, the delegate and ipam blocks.
func (c *NetConf) check() error {
	var err error
	if c.wait, err = parseWait(c.SubnetFileWait); err != nil {
		return err
	}
	if c.delegateType, err = checkDelegate(c.Delegate); err != nil {
		return err
	}
	return checkIPAM(c.IPAM)
}

func parseWait(s string) (time.Duration, error) {
	if s == "" {
		return defaultWait, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 || d > maxWait {
		return 0, netconf.Invalid("subnetFileWait %q: want a duration from \"0s\" to %q, e.g. \"5s\" or \"500ms\"", s, maxWait.String())
	}
	return d, nil
}

// checkDelegate applies flannel's rules to the delegate block: a string
// type, and no name or ipam, which flannel sets itself.
func checkDelegate(d map[string]json.RawMessage) (string, error) {
	typ := defaultDelegate
	if _, err := decodeKey(d, "delegate", "type", &typ, "a string naming the delegated plugin"); err != nil {
		return "", err
	}
	switch {
	case typ == "" || strings.ContainsAny(typ, `/\`) || typ == "." || typ == "..":
		return "", netconf.Invalid("delegate.type %q is not a plugin name; name a binary of CNI_PATH, e.g. \"bridge\"", typ)
	case typ == "flannel":
		return "", netconf.Invalid("delegate.type \"flannel\" would call flannel again; delegate to the plugin that attaches the pod, e.g. \"bridge\"")
	case has(d, "name"):
		return "", netconf.Invalid("delegate.name must not be set: flannel gives the delegate the network's name; remove it")
	case has(d, "ipam"):
		return "", netconf.Invalid("delegate.ipam must not be set: flannel builds the delegate's ipam from subnet.env and the top-level \"ipam\"; move its keys there")
	}
	return typ, nil
}

// checkIPAM checks the ipam base. Its ranges come from subnet.env: flannel
// silently overwrites "ranges" and passes the legacy single-range keys on,
// which gives host-local a second range set; both are refused here.
func checkIPAM(m map[string]json.RawMessage) error {
	var typ string
	if _, err := decodeKey(m, "ipam", "type", &typ, "a string"); err != nil {
		return err
	}
	var ranges [][]map[string]any
	set, err := decodeKey(m, "ipam", "ranges", &ranges, "a list of range sets")
	if err != nil {
		return err
	}
	if set {
		return netconf.Invalid("ipam.ranges is set, but flannel takes the node's ranges from FLANNEL_SUBNET and FLANNEL_IPV6_SUBNET of subnet.env; remove it")
	}
	for _, key := range []string{"subnet", "rangeStart", "rangeEnd", "gateway"} {
		if has(m, key) {
			return netconf.Invalid("ipam.%s is set, but flannel takes the node's range from subnet.env; remove it", key)
		}
	}
	var routes []struct {
		Dst string `json:"dst"`
	}
	if _, err := decodeKey(m, "ipam", "routes", &routes, "a list of routes"); err != nil {
		return err
	}
	for i, r := range routes {
		if _, err := netip.ParsePrefix(r.Dst); err != nil {
			return netconf.Invalid("ipam.routes[%d].dst %q is not a CIDR; write e.g. 10.96.0.0/12 or 0.0.0.0/0", i, r.Dst)
		}
	}
	return nil
}

// decodeKey reads section.key into v when present and not null; a value of
// the wrong JSON type is a decoding failure (code 6).
func decodeKey(m map[string]json.RawMessage, section, key string, v any, want string) (bool, error) {
	raw, ok := m[key]
	if !ok || isNull(raw) {
		return false, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return true, netconf.Errorf(netconf.CodeDecoding, "%s.%s must be %s: %w", section, key, want, err)
	}
	return true, nil
}

func has(m map[string]json.RawMessage, key string) bool {
	raw, ok := m[key]
	return ok && !isNull(raw)
}

func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null"))
}
