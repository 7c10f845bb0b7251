package e2e

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// specVersions are the versions the suite promises; each binary may support more.
var specVersions = []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"}

func TestVersionListsSpecVersions(t *testing.T) {
	for _, plugin := range plugins(t) {
		t.Run(plugin, func(t *testing.T) {
			out := pluginCall{plugin: plugin, cmd: "VERSION"}.run(t)
			out.ok(t, "VERSION")
			var info struct {
				CNIVersion        string   `json:"cniVersion"`
				SupportedVersions []string `json:"supportedVersions"`
			}
			if err := json.Unmarshal([]byte(out.stdout), &info); err != nil {
				t.Fatalf("VERSION output %q: %v", out.stdout, err)
			}
			for _, v := range specVersions {
				if !slices.Contains(info.SupportedVersions, v) {
					t.Errorf("VERSION lists %v, missing %s", info.SupportedVersions, v)
				}
			}
		})
	}
}

// TestNoCommandPrintsAbout: run by hand without CNI_COMMAND, a binary says
// what it is on stderr and succeeds, as the reference binaries do.
func TestNoCommandPrintsAbout(t *testing.T) {
	for _, plugin := range plugins(t) {
		out := pluginCall{plugin: plugin, env: map[string]string{"CNI_COMMAND": ""}}.run(t)
		out.ok(t, plugin+" without CNI_COMMAND")
		if out.stdout != "" || !strings.Contains(out.stderr, "CNI protocol versions supported") {
			t.Errorf("%s: stdout %q, stderr %q", plugin, out.stdout, out.stderr)
		}
	}
}

// TestSpecVersions runs every binary at every spec version: the ADD result
// is printed in the requested version's format, CHECK exists from 0.4.0 and
// GC and STATUS from 1.1.0, and older versions get code 1 for them.
func TestSpecVersions(t *testing.T) {
	for _, plugin := range plugins(t) {
		t.Run(plugin, func(t *testing.T) {
			t.Parallel()
			sb := newSandbox(t)
			if entersContainer(plugin) && !sb.privileged() {
				t.Skip("needs root: the plugin works inside a container namespace")
			}
			dataDir := t.TempDir()
			sb.prepare(t, plugin, dataDir)
			for _, v := range specVersions {
				t.Run(v, func(t *testing.T) {
					conf := validConf(t, plugin, dataDir)
					conf["cniVersion"] = v
					if prev, ok := conf["prevResult"].(map[string]any); ok {
						prev["cniVersion"] = v // a runtime gives the prevResult the configuration's version
					}
					sb.renew(t, plugin)
					runAtVersion(t, sb, plugin, conf)
					sb.clean(t)
					if r := reservations(t, dataDir, "e2e"); len(r) != 0 {
						t.Errorf("DEL left reservations %v", r)
					}
				})
			}
		})
	}
}

func runAtVersion(t *testing.T, sb *sandbox, plugin string, conf map[string]any) {
	t.Helper()
	v := conf["cniVersion"].(string)
	add := sb.call(plugin, "ADD", jsonConf(t, conf)).run(t)
	add.ok(t, "ADD")
	checkResultFormat(t, add.stdout, v)

	conf["prevResult"] = json.RawMessage(add.stdout)
	check := sb.call(plugin, "CHECK", jsonConf(t, conf)).run(t)
	if v == "0.3.1" {
		check.failsWith(t, 1)
	} else {
		check.ok(t, "CHECK")
	}
	for _, verb := range []string{"STATUS", "GC"} {
		out := sb.call(plugin, verb, jsonConf(t, conf)).run(t)
		if v == "1.1.0" {
			out.ok(t, verb)
		} else {
			out.failsWith(t, 1)
		}
	}
	for range 2 {
		sb.call(plugin, "DEL", jsonConf(t, conf)).run(t).ok(t, "DEL")
	}
}

// checkResultFormat: before 1.0.0 every IP carries "version", from 1.0.0 none does.
func checkResultFormat(t *testing.T, stdout, v string) {
	t.Helper()
	var res struct {
		CNIVersion string           `json:"cniVersion"`
		IPs        []map[string]any `json:"ips"`
	}
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("ADD result %q: %v", stdout, err)
	}
	if res.CNIVersion != v || len(res.IPs) == 0 {
		t.Fatalf("ADD at %s printed version %q with %d IPs:\n%s", v, res.CNIVersion, len(res.IPs), stdout)
	}
	wantKey := v == "0.3.1" || v == "0.4.0"
	for _, ip := range res.IPs {
		if _, has := ip["version"]; has != wantKey {
			t.Errorf("at %s an IP has \"version\" = %v, want %v:\n%s", v, has, wantKey, stdout)
		}
	}
}
