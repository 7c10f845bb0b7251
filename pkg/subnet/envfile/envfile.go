// Package envfile is the subnet.env contract between subnetd, which writes
// it, and the flannel CNI plugin, which reads it: flanneld's keys, in
// flanneld's order, written atomically. The plugin links it in, so of the
// suite it imports only pkg/family and pkg/regfile: never pkg/subnet,
// pkg/overlay or a store client.
package envfile

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/regfile"
)

// DefaultPath is where flanneld writes the file and the flannel plugin looks.
const DefaultPath = "/run/flannel/subnet.env"

// ErrSyntax marks a file that cannot be read as subnet.env.
var ErrSyntax = errors.New("malformed subnet.env")

// Env is what subnet.env says. Subnet and IPv6Subnet carry the node's first
// pod address (the bridge's) with the subnet's prefix length: 10.244.3.1/24.
type Env struct {
	Network     netip.Prefix
	Subnet      netip.Prefix
	IPv6Network netip.Prefix
	IPv6Subnet  netip.Prefix
	MTU         int
	IPMasq      bool
}

// SubnetOf is the node's subnet of family f as the file carries it:
// Subnet or IPv6Subnet.
func (e Env) SubnetOf(f family.Family) netip.Prefix {
	if f == family.IPv6 {
		return e.IPv6Subnet
	}
	return e.Subnet
}

// Marshal renders the file as flanneld does: FLANNEL_NETWORK, FLANNEL_SUBNET,
// FLANNEL_IPV6_NETWORK, FLANNEL_IPV6_SUBNET (each family when present),
// FLANNEL_MTU, FLANNEL_IPMASQ. Keys whose value is unset are left out.
func (e Env) Marshal() []byte {
	var b bytes.Buffer
	for _, kv := range []struct {
		key string
		p   netip.Prefix
	}{{"FLANNEL_NETWORK", e.Network}, {"FLANNEL_SUBNET", e.Subnet}, {"FLANNEL_IPV6_NETWORK", e.IPv6Network}, {"FLANNEL_IPV6_SUBNET", e.IPv6Subnet}} {
		if kv.p.IsValid() {
			fmt.Fprintf(&b, "%s=%s\n", kv.key, kv.p)
		}
	}
	fmt.Fprintf(&b, "FLANNEL_MTU=%d\nFLANNEL_IPMASQ=%t\n", e.MTU, e.IPMasq)
	return b.Bytes()
}

// FirstHost turns a subnet into the form subnet.env carries: its first
// address after the network address, with the subnet's length.
func FirstHost(subnet netip.Prefix) netip.Prefix {
	if !subnet.IsValid() {
		return netip.Prefix{}
	}
	return netip.PrefixFrom(subnet.Masked().Addr().Next(), subnet.Bits())
}

// Write replaces the file at path atomically: readers see the old content or
// the new, never a part.
func Write(path string, e Env) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	return regfile.Replace(path, e.Marshal(), 0o644)
}

// MaxSize bounds what Read reads: the file flanneld and subnetd write is a
// few hundred bytes.
const MaxSize = 64 << 10

// Read reads the file at path, which must be a regular file (a symlink to
// one is fine) of at most MaxSize bytes. Anything else is refused without
// being read (a directory, a device) and without blocking (a FIFO): the
// error wraps regfile.ErrNotRegular; a longer file is ErrSyntax.
func Read(path string) (Env, error) {
	data, _, err := regfile.Read(path, MaxSize, regfile.Follow)
	if errors.Is(err, regfile.ErrTooLarge) {
		return Env{}, fmt.Errorf("%w: %w", ErrSyntax, err)
	}
	if err != nil {
		return Env{}, err
	}
	e, err := Parse(data)
	if err != nil {
		return Env{}, fmt.Errorf("%s: %w", path, err)
	}
	return e, nil
}

// Parse reads subnet.env tolerantly, as a shell would source it: blank lines
// and # comments are skipped, "export " is allowed, values may be quoted,
// unknown keys are ignored. A known key with a bad value is an error.
func Parse(data []byte) (Env, error) {
	var e Env
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimSpace(strings.TrimPrefix(line, "export "))
		key, raw, ok := strings.Cut(line, "=")
		if !ok {
			return Env{}, fmt.Errorf("%w: line %d: want KEY=VALUE, got %q", ErrSyntax, n, line)
		}
		val, err := unquote(strings.TrimSpace(raw))
		if err == nil {
			err = e.set(strings.TrimSpace(key), val)
		}
		if err != nil {
			return Env{}, fmt.Errorf("%w: line %d: %w", ErrSyntax, n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return Env{}, fmt.Errorf("%w: %w", ErrSyntax, err)
	}
	return e, nil
}

// unquote strips one pair of matching quotes, or a trailing " # comment".
func unquote(v string) (string, error) {
	if len(v) > 0 && (v[0] == '"' || v[0] == '\'') {
		end := strings.IndexByte(v[1:], v[0])
		if end < 0 {
			return "", fmt.Errorf("unterminated quote in %q", v)
		}
		if rest := strings.TrimSpace(v[end+2:]); rest != "" && !strings.HasPrefix(rest, "#") {
			return "", fmt.Errorf("text after the closing quote in %q", v)
		}
		return v[1 : end+1], nil
	}
	if i := strings.Index(v, " #"); i >= 0 {
		v = strings.TrimSpace(v[:i])
	}
	return v, nil
}

func (e *Env) set(key, val string) error {
	var err error
	switch key {
	case "FLANNEL_NETWORK":
		e.Network, err = parsePrefix(key, val, family.IPv4)
	case "FLANNEL_SUBNET":
		e.Subnet, err = parsePrefix(key, val, family.IPv4)
	case "FLANNEL_IPV6_NETWORK":
		e.IPv6Network, err = parsePrefix(key, val, family.IPv6)
	case "FLANNEL_IPV6_SUBNET":
		e.IPv6Subnet, err = parsePrefix(key, val, family.IPv6)
	case "FLANNEL_MTU":
		e.MTU, err = strconv.Atoi(val)
		if err == nil && (e.MTU < 68 || e.MTU > 65535) {
			err = fmt.Errorf("FLANNEL_MTU %d is out of range 68..65535", e.MTU)
		}
	case "FLANNEL_IPMASQ":
		e.IPMasq, err = strconv.ParseBool(val)
	}
	return err
}

func parsePrefix(key, val string, f family.Family) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(val)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%s: %w", key, err)
	}
	if family.OfPrefix(p) != f || p.Addr().Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%s %s is of the wrong address family", key, p)
	}
	return p, nil
}
