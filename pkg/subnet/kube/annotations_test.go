package kube

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/subnet"
)

// TestPrefix: prefixes are completed and refused as flanneld does.
func TestPrefix(t *testing.T) {
	for _, tc := range []struct {
		prefix, managed string // managed "": refused
	}{
		{DefaultPrefix, "flannel.alpha.coreos.com/kube-subnet-manager"},
		{"flannel.alpha.coreos.com/", "flannel.alpha.coreos.com/kube-subnet-manager"},
		{"example.com/net", "example.com/net-kube-subnet-manager"},
		{"example.com/net-", "example.com/net-kube-subnet-manager"},
		{"a.b.example.com", "a.b.example.com/kube-subnet-manager"},
		{"example.com/a/b", ""},        // two slashes
		{"example", ""},                // not a DNS name with a dot
		{"Example.com", ""},            // uppercase
		{"evil/example.com/x", ""},     // two slashes
		{"x.example.com/Net", ""},      // uppercase name
		{"x.example.com/a b", ""},      // blank
		{"junk/flannel.alpha.com", ""}, // no dot before the slash
	} {
		a, err := newAnnotations(tc.prefix)
		switch {
		case tc.managed == "" && !errors.Is(err, ErrBadPrefix):
			t.Errorf("%q: %v, want refused", tc.prefix, err)
		case tc.managed != "" && (err != nil || a.managed != tc.managed):
			t.Errorf("%q: %q, %v; want %q", tc.prefix, a.managed, err, tc.managed)
		}
	}
	a, _ := newAnnotations(DefaultPrefix)
	want := []string{"flannel.alpha.coreos.com/backend-type", "flannel.alpha.coreos.com/backend-data", "flannel.alpha.coreos.com/backend-v6-data",
		"flannel.alpha.coreos.com/public-ip", "flannel.alpha.coreos.com/public-ipv6",
		"flannel.alpha.coreos.com/public-ip-overwrite", "flannel.alpha.coreos.com/public-ipv6-overwrite"}
	got := []string{a.backendType, a.data[family.IPv4], a.data[family.IPv6], a.publicIP[family.IPv4], a.publicIP[family.IPv6], a.overwrite[family.IPv4], a.overwrite[family.IPv6]}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("annotation names %v, want flanneld's %v", got, want)
	}
}

// FuzzEntry: whatever a Node carries (anyone allowed to patch Nodes writes
// there), reading its lease never panics, and a lease read is valid JSON
// that decodes as flannel's, of the network's families.
func FuzzEntry(f *testing.F) {
	f.Add("10.244.1.0/24", "fd00:10:244:1::/64", "vxlan", `{"VNI":1,"VtepMAC":"0a:00:00:00:00:01"}`, "192.168.1.1", "fd00::1")
	f.Add("10.244.1.0/24", "", "host-gw", "null", "not-an-ip", "")
	f.Add("10.244.1.1/24", "10.244.2.0/24", "", "{", "::1", "1.2.3.4")
	f.Fuzz(func(t *testing.T, cidr1, cidr2, typ, data, ip4, ip6 string) {
		c, err := subnet.ParseConfig([]byte(`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56"}`))
		if err != nil {
			t.Fatal(err)
		}
		s, err := New(Options{NodeName: "me", Network: c, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		p := DefaultPrefix + "/"
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "peer", Annotations: map[string]string{
			p + "kube-subnet-manager": "true", p + "backend-type": typ, p + "backend-data": data, p + "backend-v6-data": data,
			p + "public-ip": ip4, p + "public-ipv6": ip6}}, Spec: corev1.NodeSpec{PodCIDRs: []string{cidr1, cidr2}}}
		e, err := s.entry(n)
		if err != nil {
			return
		}
		var a subnet.Attrs
		if err := json.Unmarshal(e.Value, &a); err != nil {
			t.Fatalf("lease %s does not decode: %v", e.Value, err)
		}
		if !e.Subnets.V4.IsValid() || !e.Subnets.V6.IsValid() || a.PublicIP != netip.MustParseAddr(ip4) || a.NodeID != "peer" {
			t.Fatalf("lease %s of %v from %q %q %q", e.Value, e.Subnets, cidr1, cidr2, ip4)
		}
	})
}
