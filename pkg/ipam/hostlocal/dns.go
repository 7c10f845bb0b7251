package hostlocal

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/regfile"
)

// maxResolvConf bounds what is read of resolvConf: a resolv.conf is a few
// lines, and libc reads no more than a handful of them.
const maxResolvConf = 64 << 10

// readResolvConf turns the resolvConf file into the result's DNS section.
func readResolvConf(path string) (types.DNS, error) {
	data, _, err := regfile.Read(path, maxResolvConf, regfile.Follow)
	if err != nil {
		return types.DNS{}, netconf.Invalid("resolvConf %s cannot be read; point it at a resolv.conf file or remove the key: %w", path, err)
	}
	dns, err := parseResolvConf(bytes.NewReader(data))
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
