package dhcpclient

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/cnisuite/cni/pkg/netconf"
)

// DefaultSocketPath is where the daemon listens and the plugin dials
// unless configured otherwise, as for the reference.
const DefaultSocketPath = "/run/cni/dhcp.sock"

// Conf is the whole network configuration: an IPAM plugin receives its
// caller's and reads its own section.
type Conf struct {
	netconf.Base
	// Shadows Base.IPAM (a shallower field wins in encoding/json).
	IPAM *IPAM `json:"ipam"`

	// Options are what every DHCP message of the attachment carries: the
	// provided ones, then the parameter request list.
	Options []Option `json:"-"`
}

// IPAM holds the reference dhcp plugin's keys.
type IPAM struct {
	Type             string          `json:"type"`
	DaemonSocketPath string          `json:"daemonSocketPath"`
	Provide          []provideOption `json:"provide"`
	Request          []requestOption `json:"request"`
	Priority         int             `json:"priority"`
}

// Option is a DHCP option: its code and value as the message carries them.
type Option struct {
	Code  uint8
	Value []byte
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

// The option codes this package names (RFC 2132).
const (
	optSubnetMask     = 1
	optRouter         = 3
	optHostName       = 12
	optParameterList  = 55
	optClassID        = 60
	optClientID       = 61
	optUserClassInfo  = 77
	maxOptionValueLen = 255
)

// optionNames are the names the reference knows; any other option is
// given by its number. An array, not a map: it costs no init.
var optionNames = [...]struct {
	name string
	code uint8
}{
	{"dhcp-client-identifier", optClientID},
	{"subnet-mask", optSubnetMask},
	{"routers", optRouter},
	{"host-name", optHostName},
	{"user-class", optUserClassInfo},
	{"vendor-class-identifier", optClassID},
}

// defaultRequested are asked for unless an entry of "request" has skipDefault.
var defaultRequested = []uint8{optRouter, optSubnetMask}

// SocketPath is where the daemon is dialed.
func (c *Conf) SocketPath() string {
	if c.IPAM.DaemonSocketPath == "" {
		return DefaultSocketPath
	}
	return c.IPAM.DaemonSocketPath
}

// Load reads and checks the configuration, and the options it gives with
// cniArgs (CNI_ARGS, for the options' fromArg).
func Load(stdin []byte, cniArgs string) (*Conf, error) {
	c := &Conf{}
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
	if c.Options, err = c.options(args); err != nil {
		return nil, err
	}
	return c, nil
}

// options are the DHCP options every message of this attachment carries:
// the provided ones (their fromArg looked up in args, the parsed CNI_ARGS)
// and the parameter request list.
func (c *Conf) options(args map[string]string) ([]Option, error) {
	var opts []Option
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
			if len(v.value) > maxOptionValueLen {
				return nil, netconf.Invalid("%s: the value of option %q is %d bytes, over the 255 a DHCP option holds; shorten it", v.from, p.Option, len(v.value))
			}
			opts = append(opts, Option{Code: code, Value: []byte(v.value)})
		}
	}
	requested, err := c.requested()
	if err != nil {
		return nil, err
	}
	if len(requested) > 0 {
		opts = append(opts, Option{Code: optParameterList, Value: requested})
	}
	return opts, nil
}

// requested is the parameter request list: the configured options, then
// the default ones unless skipped, each once.
func (c *Conf) requested() ([]uint8, error) {
	var list []uint8
	add := func(code uint8) {
		if !slices.Contains(list, code) {
			list = append(list, code)
		}
	}
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
		add(code)
	}
	if !skipDefault {
		for _, code := range defaultRequested {
			add(code)
		}
	}
	return list, nil
}

func (o optionName) code(key string) (uint8, error) {
	for _, n := range optionNames {
		if n.name == string(o) {
			return n.code, nil
		}
	}
	n, err := strconv.ParseUint(string(o), 10, 8)
	if err != nil || n == 0 || n == 255 {
		return 0, netconf.Invalid("%s.option %q is neither an option number (1 to 254) nor one of the names dhcp-client-identifier, subnet-mask, routers, host-name, user-class, vendor-class-identifier", key, string(o))
	}
	return uint8(n), nil
}
