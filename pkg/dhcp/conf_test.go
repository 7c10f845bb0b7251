package dhcp

import (
	"strings"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// TestOptions: provided values (fixed and from CNI_ARGS), the default
// request list, skipDefault, and names as numbers.
func TestOptions(t *testing.T) {
	conf := `{"cniVersion": "1.1.0", "name": "n", "type": "bridge", "ipam": {"type": "dhcp",
		"provide": [{"option": "host-name", "fromArg": "K8S_POD_NAME"}, {"option": "60", "value": "cni"}],
		"request": [{"option": 121}, {"option": "subnet-mask", "skipDefault": %s}]}}`
	for _, tc := range []struct {
		skip string
		want []dhcpv4.OptionCode
	}{
		{"false", []dhcpv4.OptionCode{dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionClasslessStaticRoute}},
		{"true", []dhcpv4.OptionCode{dhcpv4.OptionSubnetMask, dhcpv4.OptionClasslessStaticRoute}},
	} {
		c, err := load([]byte(strings.Replace(conf, "%s", tc.skip, 1)), "IgnoreUnknown=1;K8S_POD_NAME=web-0")
		if err != nil {
			t.Fatal(err)
		}
		msg, _ := dhcpv4.New()
		for _, o := range c.opts {
			msg.Options.Update(o)
		}
		if got := string(msg.Options.Get(dhcpv4.OptionHostName)); got != "web-0" {
			t.Errorf("host-name %q, want web-0", got)
		}
		if got := string(msg.Options.Get(dhcpv4.OptionClassIdentifier)); got != "cni" {
			t.Errorf("option 60 %q, want cni", got)
		}
		if got := msg.ParameterRequestList(); got.String() != dhcpv4.OptionCodeList(tc.want).String() {
			t.Errorf("skipDefault %s: requested %s, want %s", tc.skip, got, dhcpv4.OptionCodeList(tc.want))
		}
	}
}

// TestClientID is the reference's: containerID/network/ifname, at most 254 bytes.
func TestClientID(t *testing.T) {
	if got := clientID("c1", "net", "eth0"); got != "c1/net/eth0" {
		t.Errorf("clientID %q", got)
	}
	if got := clientID(strings.Repeat("a", 300), "net", "eth0"); len(got) != 254 {
		t.Errorf("long clientID has %d bytes, want 254", len(got))
	}
}
