// Package dhcp is the dhcp IPAM plugin and its daemon. The plugin forwards
// ADD, CHECK, DEL and GC over a unix socket to the daemon (the reference's
// net/rpc protocol, so either side may be the reference's); the daemon runs
// the DHCP client inside the pod's network namespace, keeps renewing the
// lease, saves it so that a restarted daemon carries on, and releases it
// on DEL, from the daemon's own namespace once the pod's is gone.
//
// It must not import another plugin's package or pkg/link: it hands out
// addresses and never configures a link.
package dhcp

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/cnisuite/cni/pkg/netconf"
)

// DefaultSocketPath is where the daemon listens and the plugin dials
// unless configured otherwise, as for the reference.
const DefaultSocketPath = "/run/cni/dhcp.sock"

// netConf is the whole network configuration: an IPAM plugin receives its
// caller's and reads its own section.
type netConf struct {
	netconf.Base
	// Shadows Base.IPAM (a shallower field wins in encoding/json).
	IPAM *ipamConf `json:"ipam"`

	opts []dhcpv4.Option // what every message of the attachment carries
}

// ipamConf holds the reference dhcp plugin's keys.
type ipamConf struct {
	Type             string          `json:"type"`
	DaemonSocketPath string          `json:"daemonSocketPath"`
	Provide          []provideOption `json:"provide"`
	Request          []requestOption `json:"request"`
	Priority         int             `json:"priority"`
}

// provideOption is an option the client sends: a fixed value, or one
// taken from a CNI_ARGS key.
type provideOption struct {
	Option  optionName `json:"option"`
	Value   string     `json:"value"`
	FromArg string     `json:"fromArg"`
}

// requestOption is an option asked for in the parameter request list;
// skipDefault drops the default ones (routers, subnet-mask).
type requestOption struct {
	SkipDefault bool       `json:"skipDefault"`
	Option      optionName `json:"option"`
}

// optionName is an option's name from dhcp-options(5) or its number; the
// reference accepts a JSON string only, we also take a number.
type optionName string

func (o *optionName) UnmarshalJSON(b []byte) error {
	var n json.Number
	if err := json.Unmarshal(b, &n); err == nil {
		*o = optionName(n)
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	*o = optionName(s)
	return nil
}

// optionNames are the names the reference knows; any other option is
// given by its number.
var optionNames = map[string]dhcpv4.OptionCode{
	"dhcp-client-identifier":  dhcpv4.OptionClientIdentifier,
	"subnet-mask":             dhcpv4.OptionSubnetMask,
	"routers":                 dhcpv4.OptionRouter,
	"host-name":               dhcpv4.OptionHostName,
	"user-class":              dhcpv4.OptionUserClassInformation,
	"vendor-class-identifier": dhcpv4.OptionClassIdentifier,
}

// defaultRequested are asked for unless an entry of "request" has skipDefault.
var defaultRequested = []dhcpv4.OptionCode{dhcpv4.OptionRouter, dhcpv4.OptionSubnetMask}

func (c *netConf) socketPath() string {
	if c.IPAM.DaemonSocketPath == "" {
		return DefaultSocketPath
	}
	return c.IPAM.DaemonSocketPath
}

// load reads and checks the configuration, and the options it gives with
// cniArgs (CNI_ARGS, for the options' fromArg).
func load(stdin []byte, cniArgs string) (*netConf, error) {
	c := &netConf{}
	if err := netconf.Load(stdin, c); err != nil {
		return nil, err
	}
	if c.IPAM == nil {
		return nil, netconf.Required(`"ipam"`, `the dhcp plugin reads its keys there, e.g. "ipam": {"type": "dhcp"}`)
	}
	if p := c.IPAM.DaemonSocketPath; p != "" && !filepath.IsAbs(p) {
		return nil, netconf.Invalid("ipam.daemonSocketPath %q is not an absolute path; give the daemon's -socketpath, e.g. %s", p, DefaultSocketPath)
	}
	args, err := netconf.ParseArgs(cniArgs)
	if err != nil {
		return nil, err
	}
	if c.opts, err = c.options(args); err != nil {
		return nil, err
	}
	return c, nil
}

// options are the DHCP options every message of this attachment carries:
// the provided ones (their fromArg looked up in args, the parsed CNI_ARGS)
// and the parameter request list.
func (c *netConf) options(args map[string]string) ([]dhcpv4.Option, error) {
	var opts []dhcpv4.Option
	for i, p := range c.IPAM.Provide {
		key := fmt.Sprintf("ipam.provide[%d]", i)
		code, err := p.Option.code(key)
		if err != nil {
			return nil, err
		}
		for _, v := range []struct{ from, value string }{{key + ".value", p.Value}, {"CNI_ARGS " + p.FromArg, args[p.FromArg]}} {
			if v.value == "" {
				continue
			}
			if len(v.value) > 255 {
				return nil, netconf.Invalid("%s: the value of option %q is %d bytes, over the 255 a DHCP option holds; shorten it", v.from, p.Option, len(v.value))
			}
			opts = append(opts, dhcpv4.Option{Code: code, Value: dhcpv4.String(v.value)})
		}
	}
	requested, err := c.requested()
	if err != nil {
		return nil, err
	}
	if len(requested) > 0 {
		opts = append(opts, dhcpv4.OptParameterRequestList(requested...))
	}
	return opts, nil
}

// requested is the parameter request list: the default options unless
// skipped, and the configured ones.
func (c *netConf) requested() ([]dhcpv4.OptionCode, error) {
	var list dhcpv4.OptionCodeList
	skipDefault := false
	for i, r := range c.IPAM.Request {
		skipDefault = skipDefault || r.SkipDefault
		if r.Option == "" {
			continue
		}
		code, err := r.Option.code(fmt.Sprintf("ipam.request[%d]", i))
		if err != nil {
			return nil, err
		}
		list.Add(code)
	}
	if !skipDefault {
		list.Add(defaultRequested...)
	}
	return list, nil
}

func (o optionName) code(key string) (dhcpv4.OptionCode, error) {
	if code, ok := optionNames[string(o)]; ok {
		return code, nil
	}
	n, err := strconv.ParseUint(string(o), 10, 8)
	if err != nil || n == 0 || n == 255 {
		return nil, netconf.Invalid("%s.option %q is neither an option number (1 to 254) nor one of the names dhcp-client-identifier, subnet-mask, routers, host-name, user-class, vendor-class-identifier", key, string(o))
	}
	return dhcpv4.GenericOptionCode(n), nil
}

// clientID identifies the attachment to the DHCP server, built as the
// reference builds it, so that a lease survives a switch between the two:
// containerID/network/ifname, cut to the 254 bytes an option holds.
func clientID(containerID, network, ifName string) string {
	id := containerID + "/" + network + "/" + ifName
	if len(id) > 254 {
		id = id[:254]
	}
	return id
}
