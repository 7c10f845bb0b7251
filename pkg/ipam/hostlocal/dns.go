package hostlocal

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/cnisuite/cni/pkg/netconf"
)

// readResolvConf turns the resolvConf file into the result's DNS section.
func readResolvConf(path string) (types.DNS, error) {
	f, err := os.Open(path)
	if err != nil {
		return types.DNS{}, netconf.Invalid("resolvConf %s cannot be read; fix the path or remove the key: %w", path, err)
	}
	defer f.Close()
	dns, err := parseResolvConf(f)
	if err != nil {
		return types.DNS{}, fmt.Errorf("reading resolvConf %s: %w", path, err)
	}
	return dns, nil
}

// parseResolvConf reads the keys of resolv.conf(5) a result can carry:
// nameserver, domain, search and options. Later domain lines win, as in libc.
func parseResolvConf(r io.Reader) (types.DNS, error) {
	var dns types.DNS
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || strings.HasPrefix(fields[0], "#") || strings.HasPrefix(fields[0], ";") {
			continue
		}
		switch fields[0] {
		case "nameserver":
			dns.Nameservers = append(dns.Nameservers, fields[1])
		case "domain":
			dns.Domain = fields[1]
		case "search":
			dns.Search = append(dns.Search, fields[1:]...)
		case "options":
			dns.Options = append(dns.Options, fields[1:]...)
		}
	}
	return dns, sc.Err()
}
