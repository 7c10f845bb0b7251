package tuning

import (
	"encoding/json"
	"math"
	"net"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/utils"

	"github.com/cnisuite/cni/pkg/netconf"
)

// DefaultDataDir is where the reference keeps, per attachment, the values
// ADD changed; the same directory, so that a node can switch between the two.
const DefaultDataDir = "/run/cni/tuning"

// DefaultAllowlist is the reference's node file of allowed sysctl patterns.
const DefaultAllowlist = "/etc/cni/tuning/allowlist.conf"

// NetConf is tuning's configuration, key for key the reference's.
type NetConf struct {
	netconf.Base
	DataDir string `json:"dataDir,omitempty"`
	// Sysctl is kept raw: the order of its keys (the order they are set
	// in) and duplicates (refused) are lost by a Go map.
	Sysctl        json.RawMessage `json:"sysctl,omitempty"`
	Mac           string          `json:"mac,omitempty"`
	Promisc       bool            `json:"promisc,omitempty"`
	MTU           int             `json:"mtu,omitempty"`
	TxQLen        *int            `json:"txQLen,omitempty"`
	Allmulti      *bool           `json:"allmulti,omitempty"`
	RuntimeConfig struct {
		Mac string `json:"mac,omitempty"`
	} `json:"runtimeConfig,omitempty"`
	Args struct {
		Cni overrides `json:"cni"`
	} `json:"args"`
}

// overrides are args.cni's keys: each one given replaces the top-level key
// of the same name (sysctl keys one by one).
type overrides struct {
	Sysctl   json.RawMessage `json:"sysctl,omitempty"`
	Mac      string          `json:"mac,omitempty"`
	Promisc  *bool           `json:"promisc,omitempty"`
	MTU      *int            `json:"mtu,omitempty"`
	Allmulti *bool           `json:"allmulti,omitempty"`
	TxQLen   *int            `json:"txQLen,omitempty"`
}

// conf is a checked configuration: what ADD sets and CHECK expects, once
// args.cni, runtimeConfig and CNI_ARGS are applied.
type conf struct {
	*NetConf
	mac      net.HardwareAddr // nil: left as it is
	promisc  bool             // false: left as it is, as by the reference
	mtu      int              // 0: left as it is
	allmulti *bool
	txQLen   *int
	sysctls  []sysctl // in the order written, args.cni's after the top level's
}

// loadBase reads what every verb needs: the shared keys and dataDir. DEL,
// GC and STATUS read no more, so that a DEL after an ADD refused for a bad
// key still succeeds.
func loadBase(stdin []byte) (*NetConf, error) {
	n := &NetConf{}
	if err := netconf.Load(stdin, n); err != nil {
		return nil, err
	}
	if n.DataDir == "" {
		n.DataDir = DefaultDataDir
	}
	// A relative directory would follow the runtime's working directory,
	// which need not be the same for DEL as for ADD.
	if !filepath.IsAbs(n.DataDir) {
		return nil, netconf.Invalid("\"dataDir\" %q is not an absolute path; leave it out for %s", n.DataDir, DefaultDataDir)
	}
	return n, nil
}

// loadConf reads and checks the whole configuration for an ADD or CHECK of
// interface ifName, so that a bad one fails before anything is changed.
func loadConf(stdin []byte, cniArgs, ifName string) (*conf, error) {
	if err := checkIfName(ifName); err != nil {
		return nil, err
	}
	n, err := loadBase(stdin)
	if err != nil {
		return nil, err
	}
	o := &n.Args.Cni
	c := &conf{NetConf: n, promisc: n.Promisc, mtu: n.MTU, allmulti: n.Allmulti, txQLen: n.TxQLen}
	if o.Promisc != nil {
		c.promisc = *o.Promisc
	}
	if o.MTU != nil {
		c.mtu = *o.MTU
	}
	if o.Allmulti != nil {
		c.allmulti = o.Allmulti
	}
	if o.TxQLen != nil {
		c.txQLen = o.TxQLen
	}
	if c.mac, err = pickMAC(n, cniArgs); err != nil {
		return nil, err
	}
	if err := c.checkRanges(); err != nil {
		return nil, err
	}
	if c.sysctls, err = mergeSysctls(n.Sysctl, o.Sysctl, ifName); err != nil {
		return nil, err
	}
	return c, nil
}

// pickMAC applies the reference tuning's precedence, which is not the
// interface plugins': args.cni.mac over runtimeConfig.mac over CNI_ARGS
// MAC= over "mac".
func pickMAC(n *NetConf, cniArgs string) (net.HardwareAddr, error) {
	kv, err := netconf.ParseArgs(cniArgs)
	if err != nil {
		return nil, err
	}
	return netconf.PickMAC(
		netconf.MACSource{Name: "args.cni.mac", Value: n.Args.Cni.Mac},
		netconf.MACSource{Name: "runtimeConfig.mac", Value: n.RuntimeConfig.Mac},
		netconf.MACSource{Name: "CNI_ARGS MAC", Value: kv["MAC"], FromEnv: true},
		netconf.MACSource{Name: `"mac"`, Value: n.Mac})
}

// checkRanges refuses what no interface takes; what a given driver refuses
// (an MTU above its maximum) the kernel says at ADD, which then undoes itself.
func (c *conf) checkRanges() error {
	switch {
	case c.mtu < 0 || c.mtu > math.MaxInt32:
		return netconf.Invalid("\"mtu\" %d is out of range; give the interface's MTU in bytes (e.g. 1450), or leave it out", c.mtu)
	case c.txQLen != nil && (*c.txQLen < 0 || int64(*c.txQLen) > math.MaxUint32):
		return netconf.Invalid("\"txQLen\" %d is out of range; give a queue length in packets from 0 (e.g. 1000), or leave it out", *c.txQLen)
	}
	return nil
}

// checkIfName refuses a CNI_IFNAME the kernel would not take: it is part of
// sysctl paths and of the saved file's name, so "/" or ".." would escape them.
func checkIfName(ifName string) error {
	if e := utils.ValidateInterfaceName(ifName); e != nil {
		return netconf.Errorf(netconf.CodeInvalidEnv, "CNI_IFNAME %q: %s; pass the name of the container's interface (e.g. eth0)", ifName, e.Msg)
	}
	return nil
}

// touchesLink says whether c asks anything of the interface itself.
func (c *conf) touchesLink() bool {
	return c.mac != nil || c.promisc || c.mtu != 0 || c.allmulti != nil || c.txQLen != nil
}
