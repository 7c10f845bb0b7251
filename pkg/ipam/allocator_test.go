package ipam

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/cnisuite/cni/pkg/netconf"
)

// memStore is an in-memory Store for allocator tests.
type memStore struct {
	recs map[netip.Addr]Owner
	last map[int]netip.Addr
}

func newMem() *memStore {
	return &memStore{recs: map[netip.Addr]Owner{}, last: map[int]netip.Addr{}}
}

func (m *memStore) Reserve(a netip.Addr, c Claim, set int) (bool, error) {
	if _, ok := m.recs[a]; ok {
		return false, nil
	}
	m.recs[a], m.last[set] = c.Owner, a
	return true, nil
}
func (m *memStore) LastReserved(set int) (netip.Addr, error) { return m.last[set], nil }
func (m *memStore) Lookup(a netip.Addr) (Reservation, bool, error) {
	o, ok := m.recs[a]
	return Reservation{Addr: a, Owner: o}, ok, nil
}
func (m *memStore) ByOwner(o Owner) ([]netip.Addr, error) {
	var out []netip.Addr
	for a, r := range m.recs {
		if r.Matches(o) {
			out = append(out, a)
		}
	}
	return out, nil
}
func (m *memStore) ReleaseByOwner(o Owner) ([]netip.Addr, error) {
	out, _ := m.ByOwner(o)
	for _, a := range out {
		delete(m.recs, a)
	}
	return out, nil
}
func (m *memStore) Release(a netip.Addr) error      { delete(m.recs, a); return nil }
func (m *memStore) Inspect() ([]Reservation, error) { return m.All() }
func (m *memStore) All() ([]Reservation, error) {
	var out []Reservation
	for a, o := range m.recs {
		out = append(out, Reservation{Addr: a, Owner: o})
	}
	return out, nil
}

func mustSet(t *testing.T, rcs ...RangeConfig) RangeSet {
	t.Helper()
	sets, err := ParseRangeSets([][]RangeConfig{rcs})
	if err != nil {
		t.Fatal(err)
	}
	return sets[0]
}

func owner(i int) Owner { return Owner{ContainerID: "c" + string(rune('a'+i)), IfName: "eth0"} }

// allocN allocates n addresses for distinct owners and returns them.
func allocN(t *testing.T, al *Allocator, n int) []string {
	t.Helper()
	var got []string
	for i := range n {
		a, err := al.Allocate(Claim{Owner: owner(i)}, netip.Addr{})
		if err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
		got = append(got, a.Address.String()+" gw "+a.Gateway.String())
	}
	return got
}

func TestAllocateOrder(t *testing.T) {
	tests := []struct {
		name string
		set  []RangeConfig
		n    int
		want []string
	}{
		{"v4 gateway skipped", []RangeConfig{{Subnet: "10.0.0.0/29"}}, 3,
			[]string{"10.0.0.2/29 gw 10.0.0.1", "10.0.0.3/29 gw 10.0.0.1", "10.0.0.4/29 gw 10.0.0.1"}},
		{"v6", []RangeConfig{{Subnet: "fd00::/64", RangeEnd: "fd00::3"}}, 2,
			[]string{"fd00::2/64 gw fd00::1", "fd00::3/64 gw fd00::1"}},
		{"gateway in the middle", []RangeConfig{{Subnet: "10.0.0.0/24", RangeStart: "10.0.0.9", RangeEnd: "10.0.0.11", Gateway: "10.0.0.10"}}, 2,
			[]string{"10.0.0.9/24 gw 10.0.0.10", "10.0.0.11/24 gw 10.0.0.10"}},
		{"across ranges of a set", []RangeConfig{{Subnet: "10.0.0.0/30"}, {Subnet: "10.9.0.0/30"}}, 2,
			[]string{"10.0.0.2/30 gw 10.0.0.1", "10.9.0.2/30 gw 10.9.0.1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			al := &Allocator{Set: mustSet(t, tt.set...), Store: newMem()}
			got := allocN(t, al, tt.n)
			if strings.Join(got, ";") != strings.Join(tt.want, ";") {
				t.Fatalf("got %v\nwant %v", got, tt.want)
			}
		})
	}
}

func TestAllocateRoundRobinAndExhaustion(t *testing.T) {
	st := newMem()
	al := &Allocator{Set: mustSet(t, RangeConfig{Subnet: "10.0.0.0/29"}), Index: 2, Store: st} // .2-.6 usable
	allocN(t, al, 5)
	if _, err := al.Allocate(Claim{Owner: Owner{"late", "eth0"}}, netip.Addr{}); !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), "range set 2 (10.0.0.1-10.0.0.6)") {
		t.Fatalf("full range: err = %v, want ErrExhausted naming the set", err)
	}
	if !al.Set.Full(mustAll(st)) {
		t.Fatal("Full = false on a full set")
	}
	// Free .3 and .5; the walk continues after the last reserved (.6), wraps
	// and must hand out .3 first, then .5: not the most recently freed.
	st.Release(mustAddr("10.0.0.5"))
	st.Release(mustAddr("10.0.0.3"))
	if al.Set.Full(mustAll(st)) {
		t.Fatal("Full = true with free addresses")
	}
	for _, want := range []string{"10.0.0.3/29", "10.0.0.5/29"} {
		got, err := al.Allocate(Claim{Owner: Owner{"n" + want, "eth0"}}, netip.Addr{})
		if err != nil || got.Address.String() != want {
			t.Fatalf("got %v, %v; want %s", got.Address, err, want)
		}
	}
	// The note moves with every reservation.
	if st.last[2] != mustAddr("10.0.0.5") {
		t.Fatalf("last reserved = %s", st.last[2])
	}
}

func TestAllocateStartsAfterLastReserved(t *testing.T) {
	tests := []struct{ last, want string }{
		{"10.0.0.3", "10.0.0.4/29"},
		{"10.0.0.6", "10.0.0.2/29"}, // wraps, skipping the gateway .1
		{"10.0.9.9", "10.0.0.2/29"}, // note outside the set: start over
		{"fd00::1", "10.0.0.2/29"},  // other family
		{"10.0.0.1", "10.0.0.2/29"}, // the gateway itself
	}
	for _, tt := range tests {
		st := newMem()
		st.last[0] = mustAddr(tt.last)
		al := &Allocator{Set: mustSet(t, RangeConfig{Subnet: "10.0.0.0/29"}), Store: st}
		got, err := al.Allocate(Claim{Owner: owner(0)}, netip.Addr{})
		if err != nil || got.Address.String() != tt.want {
			t.Errorf("last %s: got %v, %v; want %s", tt.last, got.Address, err, tt.want)
		}
	}
}

func TestAllocateRequested(t *testing.T) {
	st := newMem()
	al := &Allocator{Set: mustSet(t, RangeConfig{Subnet: "10.0.0.0/24", RangeEnd: "10.0.0.100"}), Store: st}
	got, err := al.Allocate(Claim{Owner: owner(0)}, mustAddr("10.0.0.50"))
	if err != nil || got.Address.String() != "10.0.0.50/24" || got.Gateway != mustAddr("10.0.0.1") {
		t.Fatalf("requested: %v, %v", got, err)
	}
	tests := []struct {
		name, addr, wantErr string
	}{
		{"taken", "10.0.0.50", "already reserved for container ca interface eth0"},
		{"gateway", "10.0.0.1", "is the gateway of subnet 10.0.0.0/24"},
		{"outside the range", "10.0.0.200", "is not in range set 0"},
	}
	for _, tt := range tests {
		_, err := al.Allocate(Claim{Owner: owner(1)}, mustAddr(tt.addr))
		var ne *netconf.Error
		if !errors.As(err, &ne) || ne.Code != netconf.CodeInvalidConfig || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s: err = %v, want code 7 containing %q", tt.name, err, tt.wantErr)
		}
	}
}

func TestAllocateRefusesDuplicate(t *testing.T) {
	st := newMem()
	al := &Allocator{Set: mustSet(t, RangeConfig{Subnet: "10.0.0.0/24"}), Store: st}
	if _, err := al.Allocate(Claim{Owner: owner(0)}, netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	if _, err := al.Allocate(Claim{Owner: owner(0)}, netip.Addr{}); err == nil || !strings.Contains(err.Error(), "run DEL for it first") {
		t.Fatalf("second ADD of one attachment: %v", err)
	}
	// A legacy record (container ID only) of the same container counts too.
	st.recs[mustAddr("10.0.0.77")] = Owner{ContainerID: "legacy"}
	if _, err := al.Allocate(Claim{Owner: Owner{"legacy", "eth1"}}, netip.Addr{}); err == nil {
		t.Fatal("legacy record of the container not seen")
	}
	// Another interface of the same container is a different attachment.
	if _, err := al.Allocate(Claim{Owner: Owner{owner(0).ContainerID, "eth1"}}, netip.Addr{}); err != nil {
		t.Fatalf("second interface: %v", err)
	}
}

func TestFullIgnoresForeignRecords(t *testing.T) {
	set := mustSet(t, RangeConfig{Subnet: "10.0.0.0/30"}) // only .2 usable
	recs := []Reservation{{Addr: mustAddr("10.0.0.1")}, {Addr: mustAddr("10.9.9.9")}, {Addr: mustAddr("fd00::2")}}
	if set.Full(recs) {
		t.Fatal("gateway and foreign records made the set full")
	}
	if !set.Full(append(recs, Reservation{Addr: mustAddr("10.0.0.2")}, Reservation{Addr: mustAddr("10.0.0.2")})) {
		t.Fatal("set with its only address reserved is not full")
	}
}

func mustAll(s Store) []Reservation {
	all, _ := s.All()
	return all
}
