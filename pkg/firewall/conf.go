package firewall

import (
	"net/netip"
	"strings"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/netfilter/podfilter"
)

// Backends: the reference's two and the suite's nftables.
const (
	backendIPTables  = "iptables"
	backendFirewalld = "firewalld"
	backendNFTables  = "nftables"
)

// Ingress policies, as the reference names them.
const (
	policyOpen       = "open"
	policySameBridge = "same-bridge"
	policyIsolated   = "isolated"
)

// defaultZone is the reference's firewalldZone default.
const defaultZone = "trusted"

// NetConf is the firewall configuration, key for key the reference's.
type NetConf struct {
	netconf.Base
	// Backend is iptables, firewalld or nftables; without it firewalld
	// when it runs, iptables otherwise, as the reference chooses.
	Backend                string `json:"backend"`
	IptablesAdminChainName string `json:"iptablesAdminChainName,omitempty"`
	FirewalldZone          string `json:"firewalldZone,omitempty"`
	IngressPolicy          string `json:"ingressPolicy,omitempty"`
}

// conf is a checked configuration.
type conf struct {
	*NetConf
	zone   string
	policy string
}

// plainName tells whether s is 1 to max letters, digits, '_', '.', '+'
// or '-', not starting with one of the last three: what the suite takes
// as an admin chain name (iptables takes 28 characters, and the others
// would need quoting in a restore or a shell) or a firewalld zone (named
// after its file). A regexp would cost every plugin start its compiling.
func plainName(s string, max int) bool {
	if s == "" || len(s) > max || strings.ContainsAny(s[:1], ".+-") {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("_.+-", c) >= 0) {
			return false
		}
	}
	return true
}

// loadConf parses and checks every key before anything is touched, so
// that a bad configuration changes nothing.
func loadConf(stdin []byte) (*conf, error) {
	n := &NetConf{}
	if err := netconf.Load(stdin, n); err != nil {
		return nil, err
	}
	c := &conf{NetConf: n, zone: n.FirewalldZone, policy: n.IngressPolicy}
	switch n.Backend {
	case "", backendIPTables, backendFirewalld, backendNFTables:
	default:
		return nil, netconf.Invalid("\"backend\" %q is not known; use \"iptables\", \"nftables\" or \"firewalld\" (or leave it out: firewalld when it runs, else iptables)", n.Backend)
	}
	if a := n.IptablesAdminChainName; a != "" && (!plainName(a, 28) || podfilter.ReservedChain(a)) {
		return nil, netconf.Invalid("\"iptablesAdminChainName\" %q is not a chain name the plugin can use: 1 to 28 letters, digits, '_', '.', '+' or '-', and not a built-in chain, a target or one of the plugin's own chains (default %q)", a, podfilter.DefaultAdminChain)
	}
	if c.zone == "" {
		c.zone = defaultZone
	}
	if !plainName(c.zone, 64) {
		return nil, netconf.Invalid("\"firewalldZone\" %q is not a firewalld zone name; `firewall-cmd --get-zones` lists them (default %q)", c.zone, defaultZone)
	}
	switch c.policy {
	case "":
		c.policy = policyOpen
	case policyOpen, policySameBridge, policyIsolated:
	default:
		return nil, netconf.Invalid("\"ingressPolicy\" %q is not known; use \"open\" (default), \"same-bridge\" or \"isolated\"", c.policy)
	}
	return c, nil
}

func (c *conf) attachment(a *cniplugin.Args) podfilter.Attachment {
	return podfilter.Attachment{Network: c.Name, ContainerID: a.ContainerID, IfName: a.IfName}
}

// podConf is what the rules of the attachment are made of, from the
// prevResult: every address it lists, as the reference takes them, and
// for same-bridge or isolated the bridge, the first interface of the
// result (the bridge plugin's). A prevResult without one is refused.
func (c *conf) podConf(a *cniplugin.Args, prev *current.Result) (*podfilter.Conf, error) {
	pc := &podfilter.Conf{Attachment: c.attachment(a), AdminChain: c.IptablesAdminChainName, Addrs: addrs(prev)}
	if err := pc.ValidTag(); err != nil {
		return nil, netconf.Invalid("%w", err)
	}
	if c.policy == policyOpen {
		return pc, nil
	}
	if len(prev.Interfaces) == 0 || prev.Interfaces[0] == nil || prev.Interfaces[0].Name == "" {
		return nil, netconf.Invalid("ingressPolicy %q needs the bridge, the first interface of the prevResult, which lists none; chain the firewall plugin after the bridge plugin", c.policy)
	}
	br := prev.Interfaces[0].Name
	if len(br) > 15 || strings.ContainsAny(br, " \t\n\r/:\"'\\") {
		return nil, netconf.Invalid("ingressPolicy %q: the prevResult's first interface %q is not an interface name; chain the firewall plugin after the bridge plugin", c.policy, br)
	}
	pc.Isolation = &podfilter.Isolation{Bridge: br, Isolated: c.policy == policyIsolated}
	return pc, nil
}

// addrs are the addresses a result lists.
func addrs(res *current.Result) []netip.Addr {
	var out []netip.Addr
	for _, ip := range res.IPs {
		if a, ok := netip.AddrFromSlice(ip.Address.IP); ok {
			out = append(out, a.Unmap())
		}
	}
	return out
}
