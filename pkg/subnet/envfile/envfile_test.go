package envfile

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cnisuite/cni/pkg/regfile"
)

func TestWriteRead(t *testing.T) {
	tests := []struct {
		name string
		env  Env
		want string
	}{
		{"ipv4", Env{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: FirstHost(netip.MustParsePrefix("10.244.3.0/24")), MTU: 1450, IPMasq: true},
			"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"},
		{"dual", Env{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.3.1/24"),
			IPv6Network: netip.MustParsePrefix("fd00:10::/48"), IPv6Subnet: FirstHost(netip.MustParsePrefix("fd00:10:0:3::/64")), MTU: 1430},
			"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_IPV6_NETWORK=fd00:10::/48\nFLANNEL_IPV6_SUBNET=fd00:10:0:3::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n"},
		{"ipv6 only", Env{IPv6Network: netip.MustParsePrefix("fd00::/56"), IPv6Subnet: netip.MustParsePrefix("fd00:0:0:1::1/64"), MTU: 1430},
			"FLANNEL_IPV6_NETWORK=fd00::/56\nFLANNEL_IPV6_SUBNET=fd00:0:0:1::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "run", "flannel", "subnet.env")
			if err := Write(path, tt.env); err != nil {
				t.Fatal(err)
			}
			data, _ := os.ReadFile(path)
			if string(data) != tt.want {
				t.Fatalf("wrote\n%s\nwant\n%s", data, tt.want)
			}
			got, err := Read(path)
			if err != nil || got != tt.env {
				t.Fatalf("Read = %+v, %v; want %+v", got, err, tt.env)
			}
			entries, _ := os.ReadDir(filepath.Dir(path))
			if len(entries) != 1 {
				t.Fatalf("%d files beside subnet.env: the temporary file stayed", len(entries)-1)
			}
		})
	}
}

func TestParseTolerant(t *testing.T) {
	in := "# written by hand\n\nexport FLANNEL_NETWORK=\"10.244.0.0/16\"\nFLANNEL_SUBNET='10.244.3.1/24'  # the bridge\n FLANNEL_MTU = 1450 \nFLANNEL_IPMASQ=true\nFLANNEL_OTHER=x\n"
	got, err := Parse([]byte(in))
	want := Env{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.3.1/24"), MTU: 1450, IPMasq: true}
	if err != nil || got != want {
		t.Fatalf("Parse = %+v, %v", got, err)
	}
	for _, bad := range []string{"FLANNEL_SUBNET", "FLANNEL_SUBNET=10.244.3.1", "FLANNEL_SUBNET=fd00::1/64", "FLANNEL_IPV6_SUBNET=10.0.0.1/24",
		"FLANNEL_MTU=abc", "FLANNEL_MTU=10", "FLANNEL_IPMASQ=maybe", `FLANNEL_NETWORK="10.0.0.0/8`, `FLANNEL_NETWORK="10.0.0.0/8" x`} {
		if _, err := Parse([]byte(bad)); !errors.Is(err, ErrSyntax) {
			t.Errorf("Parse(%q) = %v, want ErrSyntax", bad, err)
		}
	}
	if _, err := Read(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Read of a missing file: %v", err)
	}
}

// TestReadRefuses: what is not a regular file of a sane size is refused at
// once, never read on or waited on.
func TestReadRefuses(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, []byte("FLANNEL_MTU=1450\n"+strings.Repeat("#", MaxSize)), 0o644); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]error{dir: regfile.ErrNotRegular, fifo: regfile.ErrNotRegular, "/dev/zero": regfile.ErrNotRegular, big: ErrSyntax} {
		start := time.Now()
		if _, err := Read(path); !errors.Is(err, want) || !strings.Contains(err.Error(), path) {
			t.Errorf("Read(%s) = %v, want %v naming the file", path, err, want)
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("Read(%s) took %v", path, took)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"))
	f.Add([]byte("export FLANNEL_IPV6_SUBNET='fd00::1/64' # c\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := Parse(data)
		if err != nil {
			return
		}
		// What parses, once written as subnetd writes it, parses back the
		// same; subnetd always knows the MTU, so a file without one is not
		// one it would write.
		if e.MTU == 0 {
			return
		}
		back, err := Parse(e.Marshal())
		if err != nil {
			t.Fatalf("%q -> %+v -> %q: %v", data, e, e.Marshal(), err)
		}
		if back != e {
			t.Fatalf("%q -> %+v -> %+v", data, e, back)
		}
	})
}
