package loopback

import (
	"context"
	"errors"
	"net"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/netconf"
	netnstest "github.com/cnisuite/cni/test/netns"
)

func args(netnsPath, conf string) *cniplugin.Args {
	return &cniplugin.Args{ContainerID: "c1", Netns: netnsPath, IfName: "lo", StdinData: []byte(conf)}
}

const conf = `{"cniVersion":"1.1.0","name":"lo","type":"loopback"}`

func loUp(t *testing.T, pod *netnstest.NS) bool {
	var up bool
	pod.Do(t, func() error {
		lo, err := netlink.LinkByName("lo")
		up = err == nil && lo.Attrs().Flags&net.FlagUp != 0
		return err
	})
	return up
}

func TestAddCheckDelDel(t *testing.T) {
	pod := netnstest.New(t, "lo-pod")
	pod.Run(t, "ip", "link", "set", "lo", "down")
	p, ctx := Plugin{}, context.Background()

	res, err := p.Add(ctx, args(pod.Path, conf))
	if err != nil {
		t.Fatal(err)
	}
	r := res.(*current.Result)
	if len(r.IPs) != 2 || !loUp(t, pod) {
		t.Fatalf("after ADD: result %v, lo up %v", r, loUp(t, pod))
	}
	if err := p.Check(ctx, args(pod.Path, conf)); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	if err := p.Del(ctx, args(pod.Path, conf)); err != nil || loUp(t, pod) {
		t.Fatalf("DEL: %v, lo up %v", err, loUp(t, pod))
	}
	var ne *netconf.Error
	if err := p.Check(ctx, args(pod.Path, conf)); err == nil {
		t.Fatal("CHECK with lo down must fail")
	}
	if err := p.Del(ctx, args(pod.Path, conf)); err != nil {
		t.Fatalf("second DEL: %v", err)
	}
	if err := p.Del(ctx, args("/run/netns/does-not-exist", conf)); err != nil {
		t.Fatalf("DEL of a vanished netns: %v", err)
	}
	if _, err := p.Add(ctx, args("/run/netns/does-not-exist", conf)); !errors.As(err, &ne) || ne.Code != netconf.CodeUnknownContainer {
		t.Fatalf("ADD into a vanished netns: %v, want code 3", err)
	}
}

func TestAddPassesPrevResultThrough(t *testing.T) {
	pod := netnstest.New(t, "lo-pod")
	chained := `{"cniVersion":"1.0.0","name":"lo","type":"loopback","prevResult":{"cniVersion":"1.0.0",
		"interfaces":[{"name":"eth0"}],"ips":[{"address":"10.9.0.2/24","interface":0}]}}`
	res, err := Plugin{}.Add(context.Background(), args(pod.Path, chained))
	if err != nil {
		t.Fatal(err)
	}
	r := res.(*current.Result)
	if len(r.IPs) != 1 || r.IPs[0].Address.String() != "10.9.0.2/24" {
		t.Fatalf("prevResult not passed through: %v", r)
	}
}
