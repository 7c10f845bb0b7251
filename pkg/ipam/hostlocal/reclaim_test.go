package hostlocal

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/netconf"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// logged gives a an in-memory logger and returns what it wrote.
func logged(a *cniplugin.Args) *bytes.Buffer {
	var buf bytes.Buffer
	a.Log = slog.New(slog.NewTextHandler(&buf, nil))
	return &buf
}

// full4 is a range of four addresses (10.1.0.2-5, the gateway .1 aside).
const full4 = `"ranges":[[{"subnet":"10.1.0.0/29","rangeEnd":"10.1.0.5"}]]`

// TestReclaimGoneOnExhaustion reproduces the field failure: every address
// of the range is held by a pod whose namespace was deleted and whose DEL
// never came. The next ADD reclaims them (logging each) and succeeds; a
// range full of live pods still fails; with reclaimStale off, nothing is
// reclaimed.
func TestReclaimGoneOnExhaustion(t *testing.T) {
	node := netnstest.New(t, "cni-hl-node")
	node.Do(t, func() error { reclaimGoneOnExhaustion(t); return nil })
}

func reclaimGoneOnExhaustion(t *testing.T) {
	dir := t.TempDir()
	c := conf(dir, full4)
	var pods []*netnstest.NS
	for i := range 4 {
		p := netnstest.New(t, "cni-hl-pod")
		a := args(fmt.Sprintf("dead%d", i), "eth0", c)
		a.Netns = p.Path
		add(t, a)
		pods = append(pods, p)
	}
	for _, p := range pods[:3] {
		p.Delete(t)
	}
	live := netnstest.New(t, "cni-hl-pod")
	off := args("new", "eth0", conf(dir, full4+`,"reclaimStale":false`))
	off.Netns = live.Path
	_, err := (Plugin{}).Add(ctx, off)
	if err == nil || !strings.Contains(err.Error(), "reclaimStale: false") {
		t.Fatalf("ADD with reclaimStale off: %v", err)
	}
	for i := range 3 {
		a := args(fmt.Sprintf("new%d", i), "eth0", c)
		a.Netns = live.Path
		log := logged(a)
		if got := addrs(add(t, a)); !strings.HasPrefix(got, "10.1.0.") {
			t.Fatalf("ADD after reclaim: %s", got)
		}
		if i == 0 && strings.Count(log.String(), "reclaimed the address of an attachment that is gone") != 3 {
			t.Fatalf("the first ADD should log the 3 reclaimed addresses:\n%s", log)
		}
	}
	// Four live attachments now: nothing can be reclaimed.
	a := args("late", "eth0", c)
	a.Netns = live.Path
	if _, err := (Plugin{}).Add(ctx, a); err == nil || !strings.Contains(err.Error(), "no reservation's owner could be proved gone") {
		t.Fatalf("ADD into a range of live pods: %v", err)
	}
	if got := heldBy(t, dir); got != "dead3 new0 new1 new2" {
		t.Fatalf("holders %q, want the live dead3 and the three new", got)
	}
}

// TestStatusCountsReclaimable: a range full only because of gone owners is
// not reported exhausted (an ADD would succeed), unless reclaimStale is off.
func TestStatusCountsReclaimable(t *testing.T) {
	node := netnstest.New(t, "cni-hl-node")
	node.Do(t, func() error { statusCountsReclaimable(t); return nil })
}

func statusCountsReclaimable(t *testing.T) {
	dir := t.TempDir()
	c := conf(dir, `"ranges":[[{"subnet":"10.1.0.0/30"}]]`)
	p := netnstest.New(t, "cni-hl-pod")
	a := args("c1", "eth0", c)
	a.Netns = p.Path
	add(t, a)
	wantCode(t, Plugin{}.Status(ctx, args("", "", c)), netconf.CodeExhausted, "range set 0")
	p.Delete(t)
	if err := (Plugin{}).Status(ctx, args("", "", c)); err != nil {
		t.Fatalf("STATUS with a reclaimable address: %v", err)
	}
	off := conf(dir, `"ranges":[[{"subnet":"10.1.0.0/30"}]],"reclaimStale":false`)
	wantCode(t, Plugin{}.Status(ctx, args("", "", off)), netconf.CodeExhausted, "range set 0")
}

// TestNoReclaimWithoutProof: records written by another plugin (no index
// entry), or by an ADD whose CNI_NETNS was not a namespace, are never
// reclaimed; an empty record, which no ADD ever completed, is.
func TestNoReclaimWithoutProof(t *testing.T) {
	dir := t.TempDir()
	c := conf(dir, full4)
	a := args("nons", "eth0", c)
	a.Netns = filepath.Join(dir, "not-a-namespace")
	add(t, a) // .2
	d := filepath.Join(dir, "net1")
	os.WriteFile(filepath.Join(d, "10.1.0.3"), []byte("ref\r\neth0"), 0o600) // the reference's
	os.WriteFile(filepath.Join(d, "10.1.0.4"), []byte("legacy"), 0o600)      // an old reference's
	os.WriteFile(filepath.Join(d, "10.1.0.5"), nil, 0o600)                   // an ADD killed between create and write
	b := args("new", "eth0", c)
	log := logged(b)
	if got := addrs(add(t, b)); got != "10.1.0.5/29 gw 10.1.0.1" {
		t.Fatalf("ADD got %s, want the empty record's 10.1.0.5", got)
	}
	if !strings.Contains(log.String(), "empty record") {
		t.Fatalf("reclaim of the empty record not logged:\n%s", log)
	}
	_, err := (Plugin{}).Add(ctx, args("late", "eth0", c))
	if err == nil || !strings.Contains(err.Error(), "no IP addresses available in network: net1") {
		t.Fatalf("ADD with only unprovable owners left: %v", err)
	}
	if got := heldBy(t, dir); got != "legacy new nons ref" {
		t.Fatalf("holders %q", got)
	}
}

// heldBy lists the owners of the network's records, sorted.
func heldBy(t *testing.T, dataDir string) string {
	t.Helper()
	var owners []string
	for _, name := range strings.Fields(files(t, dataDir)) {
		if name == "lock" || strings.HasPrefix(name, "last_reserved_ip") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dataDir, "net1", name))
		if err != nil {
			t.Fatal(err)
		}
		id, _, _ := strings.Cut(string(data), "\r\n")
		owners = append(owners, id)
	}
	slices.Sort(owners)
	return strings.Join(owners, " ")
}

// BenchmarkAddDel measures one ADD and one DEL of an attachment in a network
// that already holds n reservations: with the index, both read a couple of
// files whatever n is (the reference reads all n on each).
func BenchmarkAddDel(b *testing.B) {
	for _, n := range []int{10, 1000} {
		b.Run(fmt.Sprintf("reservations=%d", n), func(b *testing.B) {
			dir := b.TempDir()
			c := conf(dir, `"subnet":"10.1.0.0/16"`)
			net := filepath.Join(dir, "net1")
			os.MkdirAll(net, 0o755)
			for i := range n {
				name := fmt.Sprintf("10.1.%d.%d", 100+i/250, 2+i%250)
				if err := os.WriteFile(filepath.Join(net, name), fmt.Appendf(nil, "pod%d\r\neth0", i), 0o600); err != nil {
					b.Fatal(err)
				}
			}
			a := args("bench", "eth0", c)
			if _, err := (Plugin{}).Add(ctx, a); err != nil { // indexes the n records once
				b.Fatal(err)
			}
			var addTime, delTime time.Duration
			b.ResetTimer()
			for b.Loop() {
				start := time.Now()
				if err := (Plugin{}).Del(ctx, a); err != nil {
					b.Fatal(err)
				}
				mid := time.Now()
				if _, err := (Plugin{}).Add(ctx, a); err != nil {
					b.Fatal(err)
				}
				delTime += mid.Sub(start)
				addTime += time.Since(mid)
			}
			b.ReportMetric(float64(addTime.Nanoseconds())/float64(b.N), "add-ns/op")
			b.ReportMetric(float64(delTime.Nanoseconds())/float64(b.N), "del-ns/op")
		})
	}
}
