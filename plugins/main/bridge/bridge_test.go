package main

import (
	"testing"

	netnstest "github.com/cnisuite/cni/test/netns"
)

func TestSmoke(t *testing.T) {
	e := newEnv(t)
	pod := netnstest.New(t, "br-pod")
	conf := e.conf(map[string]any{"isDefaultGateway": true, "ipMasq": true}, "10.244.1.0/24", "fd00:10::/64")
	a := e.args(pod, "c1", conf)
	res := e.mustAdd(a)
	t.Logf("%+v", res)
	t.Log(pod.Run(t, "ip", "addr"), pod.Run(t, "ip", "route"), pod.Run(t, "ip", "-6", "route"))
	t.Log(e.node.Run(t, "iptables-save", "-t", "nat"))
	if err := e.check(e.args(pod, "c1", withPrev(t, conf, res))); err != nil {
		t.Fatal(err)
	}
	if err := e.del(a); err != nil {
		t.Fatal(err)
	}
	e.assertClean()
}
