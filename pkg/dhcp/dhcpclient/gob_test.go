package dhcpclient

import (
	"bufio"
	"bytes"
	"encoding/gob"
	"errors"
	"net"
	"reflect"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// fullResult sets every field of a result that gob sends.
func fullResult() *current.Result {
	one, table, scope := 1, 100, 253
	_, ipn, _ := net.ParseCIDR("10.77.0.5/24")
	_, dst, _ := net.ParseCIDR("10.9.0.0/16")
	_, v6, _ := net.ParseCIDR("2001:db8::5/64")
	return &current.Result{
		CNIVersion: "1.1.0",
		Interfaces: []*current.Interface{{Name: "eth0", Mac: "02:00:00:00:00:01", Mtu: 1500, Sandbox: "/run/netns/x", SocketPath: "/s", PciID: "0000:00:01.0"}},
		IPs:        []*current.IPConfig{{Interface: &one, Address: *ipn, Gateway: net.ParseIP("10.77.0.1").To4()}, {Address: *v6}},
		Routes: []*types.Route{{Dst: *dst, GW: net.ParseIP("10.77.0.1"), MTU: 1400, AdvMSS: 1360, Priority: 50, Table: &table, Scope: &scope},
			{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}}},
		DNS: types.DNS{Nameservers: []string{"10.77.0.1"}, Domain: "cluster.local", Search: []string{"a", "b"}, Options: []string{"ndots:5"}},
	}
}

// gobStream is what net/rpc's server writes for values: encoding/gob's
// stream, type definitions first.
func gobStream(t *testing.T, values ...any) *bufio.Reader {
	t.Helper()
	var buf bytes.Buffer
	enc := gob.NewEncoder(&buf)
	for _, v := range values {
		if err := enc.Encode(v); err != nil {
			t.Fatal(err)
		}
	}
	return bufio.NewReader(&buf)
}

// TestGobDecodesWhatGobSends: a response header and a result with every
// field set, as encoding/gob writes them, decode to what encoding/gob
// reads; an error's empty struct is skipped; the stream's end is io.EOF.
func TestGobDecodesWhatGobSends(t *testing.T) {
	h := responseHeader{ServiceMethod: "DHCP.Allocate", Seq: 300, Error: "x"}
	for _, res := range []*current.Result{fullResult(), {}} {
		var want current.Result
		if err := gob.NewDecoder(gobStream(t, res)).Decode(&want); err != nil {
			t.Fatal(err)
		}
		d := gobDecoder{r: gobStream(t, &h, res, struct{}{}, &h)}
		var gotH, againH responseHeader
		var got current.Result
		if err := d.decode(&gotH); err != nil || gotH != h {
			t.Fatalf("header %+v, %v; want %+v", gotH, err, h)
		}
		if err := d.decode(&got); err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("result %+v, %v; want %+v", got, err, want)
		}
		if err := d.decode(nil); err != nil {
			t.Fatalf("skipping an empty struct: %v", err)
		}
		if err := d.decode(&againH); err != nil || againH != h {
			t.Fatalf("the header once its type is known: %+v, %v", againH, err)
		}
		if err := d.decode(nil); err == nil {
			t.Fatal("decoding past the end succeeded")
		}
	}
}

// wide has a field of every kind gob sends; narrow keeps some of them, as
// a client knows fewer fields than a newer daemon sends.
type wide struct {
	B   bool
	I   int8
	U   uint16
	F   float64
	C   complex128
	S   string
	Arr [2]string
	M   map[string][]int
	N   *struct{ X, Y int }
	L   []struct{ Z []byte }
	Q   [][]uint
}

type narrow struct {
	S string
	M map[string][]int
	Q [][]uint
}

// TestGobKinds: values of every kind decode as encoding/gob decodes them,
// and fields the target lacks are skipped.
func TestGobKinds(t *testing.T) {
	v := wide{B: true, I: -7, U: 300, F: 17.5, C: 1 + 2i, S: "s", Arr: [2]string{"a", ""}, M: map[string][]int{"k": {1, -2}},
		N: &struct{ X, Y int }{0, 3}, L: []struct{ Z []byte }{{}, {[]byte("z")}}, Q: [][]uint{{1 << 40}, nil}}
	var want wide
	if err := gob.NewDecoder(gobStream(t, v)).Decode(&want); err != nil {
		t.Fatal(err)
	}
	var got wide
	if err := (&gobDecoder{r: gobStream(t, v)}).decode(&got); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("got %#v, %v; want %#v", got, err, want)
	}
	var n narrow
	if err := (&gobDecoder{r: gobStream(t, v)}).decode(&n); err != nil || n.S != "s" || len(n.M["k"]) != 2 || n.Q[0][0] != 1<<40 {
		t.Errorf("narrow %+v, %v", n, err)
	}
	var mismatch struct{ S int }
	if err := (&gobDecoder{r: gobStream(t, v)}).decode(&mismatch); !errors.Is(err, errGob) {
		t.Errorf("a string into an int: %v, want an error", err)
	}
}

// TestGobEncodesWhatGobReads: the request header and body that the client
// writes are what encoding/gob (net/rpc's server) decodes, a second value
// of a type reusing its definition.
func TestGobEncodesWhatGobReads(t *testing.T) {
	h := requestHeader{ServiceMethod: "DHCP.Allocate", Seq: 1 << 20}
	req := Request{ContainerID: "c1", Netns: "/run/netns/x", IfName: "eth0", Args: "K=V", Path: "/opt/cni/bin", StdinData: []byte(`{"a":1}`)}
	var e gobEncoder
	var b []byte
	var err error
	for _, v := range []any{&h, &req, &requestHeader{}, &Request{StdinData: []byte{}}} {
		if b, err = e.encode(b, v); err != nil {
			t.Fatal(err)
		}
	}
	dec := gob.NewDecoder(bytes.NewReader(b))
	var gotH, zeroH requestHeader
	var got, empty Request
	for _, v := range []any{&gotH, &got, &zeroH, &empty} {
		if err := dec.Decode(v); err != nil {
			t.Fatal(err)
		}
	}
	if gotH != h || !reflect.DeepEqual(got, req) || zeroH != (requestHeader{}) || !reflect.DeepEqual(empty, Request{}) {
		t.Errorf("gob read %+v %+v %+v %+v", gotH, got, zeroH, empty)
	}
	if _, err := e.encode(nil, &struct{ M map[string]string }{}); err == nil {
		t.Error("a struct with a map was encoded")
	}
}

// FuzzGobDecode: no stream makes the decoder panic or allocate beyond
// what it read.
func FuzzGobDecode(f *testing.F) {
	var buf bytes.Buffer
	enc := gob.NewEncoder(&buf)
	_ = enc.Encode(&responseHeader{ServiceMethod: "DHCP.Allocate"})
	_ = enc.Encode(fullResult())
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		d := gobDecoder{r: bufio.NewReader(bytes.NewReader(b))}
		var h responseHeader
		var res current.Result
		if d.decode(&h) == nil {
			_ = d.decode(&res)
		}
		_ = (&gobDecoder{r: bufio.NewReader(bytes.NewReader(b))}).decode(nil)
	})
}
