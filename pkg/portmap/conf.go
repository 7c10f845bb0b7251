package portmap

import (
	"fmt"
	"net/netip"
	"strings"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/netfilter/hostport"
	"github.com/cnisuite/cni/pkg/netfilter/iptables"
)

// Backends, as the reference names them.
const (
	backendIPTables = "iptables"
	backendNFTables = "nftables"
)

// defaultMarkBit is the reference's: Kubernetes uses bits 14 and 15,
// Calico 20 to 31.
const defaultMarkBit = 13

// NetConf is the portmap configuration, key for key the reference's.
type NetConf struct {
	netconf.Base
	Backend              *string   `json:"backend,omitempty"`
	SNAT                 *bool     `json:"snat,omitempty"`
	ConditionsV4         *[]string `json:"conditionsV4"`
	ConditionsV6         *[]string `json:"conditionsV6"`
	MasqAll              bool      `json:"masqAll,omitempty"`
	MarkMasqBit          *int      `json:"markMasqBit"`
	ExternalSetMarkChain *string   `json:"externalSetMarkChain"`
	RuntimeConfig        struct {
		PortMaps []PortMapEntry `json:"portMappings,omitempty"`
	} `json:"runtimeConfig,omitempty"`
}

// PortMapEntry is one element of runtimeConfig.portMappings (CNI
// conventions), as kubelet passes a pod's hostPorts.
type PortMapEntry struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP,omitempty"`
}

// conf is a checked configuration.
type conf struct {
	*NetConf
	backend string
	hp      hostport.Conf // without the attachment, which comes from CNI_*
}

// loadConf parses and checks everything before any rule is touched, so
// that a bad configuration changes nothing.
func loadConf(stdin []byte) (*conf, error) {
	n := &NetConf{}
	if err := netconf.Load(stdin, n); err != nil {
		return nil, err
	}
	c := &conf{NetConf: n, hp: hostport.Conf{SNAT: n.SNAT == nil || *n.SNAT, MasqAll: n.MasqAll, MarkBit: defaultMarkBit}}
	if err := c.markOptions(); err != nil {
		return nil, err
	}
	if err := c.chooseBackend(); err != nil {
		return nil, err
	}
	maps, err := parseMaps(n.RuntimeConfig.PortMaps)
	if err != nil {
		return nil, err
	}
	c.hp.Maps = maps
	return c, nil
}

func (c *conf) markOptions() error {
	n := c.NetConf
	if n.MarkMasqBit != nil && n.ExternalSetMarkChain != nil {
		return netconf.Invalid("\"externalSetMarkChain\" and \"markMasqBit\" exclude each other; keep one")
	}
	if n.MarkMasqBit != nil {
		if *n.MarkMasqBit < 0 || *n.MarkMasqBit > 31 {
			return netconf.Invalid("\"markMasqBit\" %d must be between 0 and 31", *n.MarkMasqBit)
		}
		c.hp.MarkBit = *n.MarkMasqBit
	}
	if n.ExternalSetMarkChain != nil {
		ch := *n.ExternalSetMarkChain
		if ch == "" || len(ch) > 28 || strings.ContainsAny(ch, " \t\r\n\"'\\") {
			return netconf.Invalid("\"externalSetMarkChain\" %q is not an iptables chain name (1 to 28 characters, no spaces or quotes), e.g. \"KUBE-MARK-MASQ\"", ch)
		}
		c.hp.ExternalSetMarkChain = ch
	}
	return nil
}

// chooseBackend applies the reference's rules: iptables unless asked
// otherwise or iptables is missing, and no option of the other backend.
func (c *conf) chooseBackend() error {
	n := c.NetConf
	switch {
	case n.Backend != nil:
		c.backend = *n.Backend
	case !iptables.HaveIPTables():
		c.backend = backendNFTables
	default:
		c.backend = backendIPTables
	}
	if c.backend != backendIPTables && c.backend != backendNFTables {
		return netconf.Invalid("\"backend\" %q is not known; use \"iptables\" or \"nftables\"", c.backend)
	}
	var wrong []string
	if n.ExternalSetMarkChain != nil && c.backend != backendIPTables {
		wrong = append(wrong, "externalSetMarkChain")
	}
	if b := conditionsBackend(n.ConditionsV4); b != "" && b != c.backend {
		wrong = append(wrong, "conditionsV4")
	}
	if b := conditionsBackend(n.ConditionsV6); b != "" && b != c.backend {
		wrong = append(wrong, "conditionsV6")
	}
	if len(wrong) > 0 {
		return netconf.Invalid("the %s backend is selected but the configuration has options of the other backend: %s; fix \"backend\" or those options", c.backend, strings.Join(wrong, ", "))
	}
	v4, err := c.conditions(family.IPv4, n.ConditionsV4)
	if err != nil {
		return err
	}
	v6, err := c.conditions(family.IPv6, n.ConditionsV6)
	c.hp.Conditions = [2][]string{family.IPv4: v4, family.IPv6: v6}
	return err
}

// conditionsBackend tells which syntax conditions are in, as the
// reference does: iptables matches start with "-" or "!".
func conditionsBackend(conds *[]string) string {
	if conds == nil || len(*conds) == 0 || (*conds)[0] == "" {
		return ""
	}
	if first := (*conds)[0][0]; first == '-' || first == '!' {
		return backendIPTables
	}
	return backendNFTables
}

func (c *conf) conditions(f family.Family, conds *[]string) ([]string, error) {
	if conds == nil {
		return nil, nil
	}
	key := fmt.Sprintf("conditionsV%d", f.Version())
	for _, s := range *conds {
		if strings.ContainsAny(s, "\r\n\x00") {
			return nil, netconf.Invalid("%q: %q has a line break; give one match per list element", key, s)
		}
	}
	if c.backend == backendNFTables {
		if _, err := hostport.ParseConditions(*conds, f); err != nil {
			return nil, netconf.Errorf(netconf.CodeUnsupportedField, "%q: %w", key, err)
		}
	}
	return *conds, nil
}

// parseMaps checks every mapping; the protocol defaults to tcp, as in a
// Kubernetes container port.
func parseMaps(entries []PortMapEntry) ([]hostport.PortMap, error) {
	out := make([]hostport.PortMap, 0, len(entries))
	for i, e := range entries {
		where := fmt.Sprintf("runtimeConfig.portMappings[%d]", i)
		if e.HostPort < 1 || e.HostPort > 65535 {
			return nil, netconf.Invalid("%s: hostPort %d must be between 1 and 65535", where, e.HostPort)
		}
		if e.ContainerPort < 1 || e.ContainerPort > 65535 {
			return nil, netconf.Invalid("%s: containerPort %d must be between 1 and 65535", where, e.ContainerPort)
		}
		m := hostport.PortMap{HostPort: uint16(e.HostPort), ContainerPort: uint16(e.ContainerPort), Protocol: strings.ToLower(e.Protocol)}
		switch m.Protocol {
		case "":
			m.Protocol = "tcp"
		case "tcp", "udp", "sctp":
		default:
			return nil, netconf.Invalid("%s: protocol %q is not tcp, udp or sctp", where, e.Protocol)
		}
		if e.HostIP != "" {
			ip, err := netip.ParseAddr(e.HostIP)
			if err != nil || ip.Zone() != "" {
				return nil, netconf.Invalid("%s: hostIP %q is not an IP address (like 192.0.2.10 or 2001:db8::10)", where, e.HostIP)
			}
			m.HostIP = ip.Unmap()
		}
		out = append(out, m)
	}
	return out, nil
}

// containerAddrs picks, as the reference does, the first address of each
// family that belongs to the container interface (or to no interface).
func containerAddrs(prev *current.Result, ifName string) []netip.Prefix {
	var first [2]netip.Prefix
	for _, ip := range prev.IPs {
		if ip.Interface != nil {
			i := *ip.Interface
			if i >= 0 && i < len(prev.Interfaces) && (prev.Interfaces[i].Name != ifName || prev.Interfaces[i].Sandbox == "") {
				continue
			}
		}
		a, ok := netip.AddrFromSlice(ip.Address.IP)
		if !ok {
			continue
		}
		ones, bits := ip.Address.Mask.Size()
		if a.Is4In6() && bits == 128 {
			ones -= 96
		}
		a = a.Unmap()
		if bits == 0 {
			ones = a.BitLen() // no mask: hairpin masquerading for the container alone
		}
		if f := family.Of(a); !first[f].IsValid() {
			first[f] = netip.PrefixFrom(a, ones)
		}
	}
	var out []netip.Prefix
	for _, p := range first {
		if p.IsValid() {
			out = append(out, p)
		}
	}
	return out
}
