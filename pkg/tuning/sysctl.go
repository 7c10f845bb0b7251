package tuning

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"unicode"

	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/regfile"
)

// sysctl is one setting of the pod's network namespace: the key as written
// (what the allowlist matches), its path under /proc/sys, and the value.
type sysctl struct {
	key, path, value string
}

// allowedKeys ends every refusal of a key.
const allowedKeys = `allowed are the net.* keys the kernel keeps per network namespace, written with dots, ` +
	`and of the per-interface ones (net.ipv4.conf.<interface>.*, also ipv6 and neigh) those of "all", "default" ` +
	`and the attachment's own interface, written IFNAME or by its name`

// mergeSysctls resolves the top-level "sysctl" object, then args.cni.sysctl
// over it: a key of args.cni replaces the setting of the same file where it
// was, the others come after. The order written is the order of the writes.
func mergeSysctls(top, args json.RawMessage, ifName string) ([]sysctl, error) {
	var out []sysctl
	for _, src := range []struct {
		name string
		raw  json.RawMessage
	}{{`"sysctl"`, top}, {"args.cni.sysctl", args}} {
		entries, err := parseObject(src.name, src.raw)
		if err != nil {
			return nil, err
		}
		seen := map[string]string{} // path -> key, within one object
		for _, e := range entries {
			s, err := resolve(e, ifName)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", src.name, err)
			}
			if other, dup := seen[s.path]; dup {
				return nil, netconf.Invalid("%s sets one sysctl twice (keys %q and %q); keep one", src.name, other, s.key)
			}
			seen[s.path] = s.key
			if i := slices.IndexFunc(out, func(o sysctl) bool { return o.path == s.path }); i >= 0 {
				out[i] = s
			} else {
				out = append(out, s)
			}
		}
	}
	return out, nil
}

// entry is one key and value of a sysctl object.
type entry struct{ key, value string }

// parseObject reads a sysctl object's entries in the order written,
// duplicates included.
func parseObject(name string, raw json.RawMessage) ([]entry, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, netconf.Errorf(netconf.CodeDecoding, `%s must be an object of sysctl keys and string values, like {"net.ipv4.conf.IFNAME.rp_filter": "1"}`, name)
	}
	var out []entry
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, netconf.Errorf(netconf.CodeDecoding, "%s: %w", name, err)
		}
		key, _ := tok.(string) // in an object, what comes before a value is its key
		var value string
		if err := dec.Decode(&value); err != nil {
			return nil, netconf.Errorf(netconf.CodeDecoding, "%s: the value of %q must be a JSON string, like \"1\"", name, key)
		}
		out = append(out, entry{key, value})
	}
	return out, nil
}

// resolve turns a key as written into its path under /proc/sys. Only keys
// with dots are taken: a "/" or an empty element ("..") could name a file
// outside the key's directory.
func resolve(e entry, ifName string) (sysctl, error) {
	parts := strings.Split(e.key, ".")
	switch {
	case strings.Contains(e.key, "/"):
		return sysctl{}, netconf.Invalid("sysctl key %q has a \"/\"; write it with dots (net.ipv4.conf.IFNAME.rp_filter); %s", e.key, allowedKeys)
	case slices.Contains(parts, ""):
		return sysctl{}, netconf.Invalid("sysctl key %q has an empty element (\"..\", or a dot at an end); %s", e.key, allowedKeys)
	case slices.ContainsFunc(parts, hasSpace):
		return sysctl{}, netconf.Invalid("sysctl key %q has a space or control character; %s", e.key, allowedKeys)
	case parts[0] != "net" || len(parts) < 3:
		return sysctl{}, netconf.Invalid("sysctl key %q is not a key of the pod's network namespace; %s", e.key, allowedKeys)
	case e.value == "" || strings.ContainsRune(e.value, 0):
		return sysctl{}, netconf.Invalid("sysctl %q: the value %q is empty or holds a NUL; give the value to write, e.g. \"1\"", e.key, e.value)
	}
	// net.<protocol>.conf.<interface>.<key>, and neigh likewise.
	if len(parts) >= 4 && (parts[2] == "conf" || parts[2] == "neigh") {
		switch parts[3] {
		case "IFNAME":
			parts[3] = ifName
		case ifName, "all", "default":
		default:
			return sysctl{}, netconf.Invalid("sysctl key %q names interface %q, not this attachment's %q; %s", e.key, parts[3], ifName, allowedKeys)
		}
	}
	return sysctl{key: e.key, path: strings.Join(parts, "/"), value: e.value}, nil
}

func hasSpace(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) })
}

// currentValues reads each sysctl in the calling thread's network namespace:
// what ADD saves and CHECK compares. A key the namespace does not have is
// refused here, before ADD changes anything.
func currentValues(sysctls []sysctl) ([]string, error) {
	cur := make([]string, len(sysctls))
	for i, s := range sysctls {
		v, err := link.ReadSysctl(s.path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, netconf.Invalid("sysctl %q: the pod's network namespace has no /proc/sys/%s (a key kept for the whole node, a typo, or an interface that is not there); %s", s.key, s.path, allowedKeys)
		case errors.Is(err, syscall.EISDIR):
			return nil, netconf.Invalid("sysctl %q names a directory; name one key in it", s.key)
		case errors.Is(err, fs.ErrPermission):
			return nil, netconf.Invalid("sysctl %q cannot be read, so DEL could not restore it (tuning refuses write-only keys): %w", s.key, err)
		case err != nil:
			return nil, err
		}
		cur[i] = v
	}
	return cur, nil
}

// sameValue compares sysctl values as the kernel reads them: multi-valued
// keys (tcp_rmem) are written with spaces and read back with tabs.
func sameValue(a, b string) bool { return slices.Equal(strings.Fields(a), strings.Fields(b)) }

// maxAllowlist bounds the allowlist read; real ones are a few lines.
const maxAllowlist = 1 << 20

// checkAllowlist applies the node's allowlist as the reference does: when
// the file exists, each key as written must match one of its lines, each a
// regular expression, unanchored as the reference matches them. Without the
// file every key passes (and the file is not read without keys).
func checkAllowlist(file string, sysctls []sysctl) error {
	if len(sysctls) == 0 {
		return nil
	}
	data, _, err := regfile.Read(file, maxAllowlist, regfile.Follow)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return netconf.Errorf(netconf.CodeIO, "reading the sysctl allowlist %s: %w", file, err)
	}
	var patterns []*regexp.Regexp
	var lines []string
	for i, line := range strings.Split(string(data), "\n") {
		if line = strings.TrimSpace(line); line == "" {
			continue
		}
		re, err := regexp.Compile(line)
		if err != nil {
			return netconf.Invalid("sysctl allowlist %s, line %d: %q is not a regular expression; fix it: %w", file, i+1, line, err)
		}
		patterns, lines = append(patterns, re), append(lines, line)
	}
	for _, s := range sysctls {
		if !slices.ContainsFunc(patterns, func(re *regexp.Regexp) bool { return re.MatchString(s.key) }) {
			return netconf.Invalid("sysctl %q is not allowed on this node: it matches none of the patterns of %s (%s); leave it out or ask the node's administrator",
				s.key, file, strings.Join(lines, " "))
		}
	}
	return nil
}
