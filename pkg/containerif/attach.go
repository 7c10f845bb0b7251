package containerif

import (
	"cmp"
	"context"
	"fmt"
	"os"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/netns"
)

// Attach is one ADD in progress: the invocation, its container's namespace,
// open, and the undo stack on which each step registers its inverse right
// after it succeeded.
type Attach struct {
	Args  *cniplugin.Args
	Netns *os.File
	Undo  *cniplugin.Undo
}

// begin opens the container's namespace for an ADD, code 3 when it is gone.
func begin(a *cniplugin.Args) (*Attach, error) {
	ns, err := netns.Open(a.Netns)
	if err != nil {
		return nil, netns.CNIError(err, a.Netns)
	}
	return &Attach{Args: a, Netns: ns, Undo: &cniplugin.Undo{}}, nil
}

// end takes back what the ADD did when *retErr is set, then closes the
// namespace, which the undo steps may need.
func (t *Attach) end(retErr *error) {
	t.Undo.OnError(retErr, t.Args.Logger())
	t.Netns.Close()
}

// Created registers the deletion of CNI_IFNAME in the container, for a
// plugin that made its link there; what names the kind in logs.
func (t *Attach) Created(what string) {
	name := t.Args.IfName
	t.Undo.Push("delete "+what+" "+name, func() error {
		return netns.DoFile(t.Netns, func() error { return link.DeleteIfExists(name) })
	})
}

// Iface describes CNI_IFNAME in the container for the result: name, MAC
// and sandbox.
func (t *Attach) Iface() (*current.Interface, error) {
	iface := &current.Interface{Name: t.Args.IfName, Sandbox: t.Args.Netns}
	err := netns.DoFile(t.Netns, func() error {
		l, err := link.ByName(iface.Name)
		if err != nil {
			return err
		}
		iface.Mac = l.Attrs().HardwareAddr.String()
		return nil
	})
	return iface, err
}

// Configure applies res to CNI_IFNAME inside the container (Configure).
func (t *Attach) Configure(res *current.Result, o Options) error {
	err := netns.DoFile(t.Netns, func() error { return Configure(t.Args.IfName, res, o) })
	if err != nil {
		return fmt.Errorf("configuring %q in %s: %w", t.Args.IfName, t.Args.Netns, err)
	}
	return nil
}

// IPAM runs the IPAM plugin's ADD, registers its release and returns its
// result with every address on interface idx of the plugin's result; with
// no IPAM type, nil. links, when set, is the plugin's link set-up: run at
// the same time as IPAM when the IPAM type allows it (host-local, static),
// which saves an IPAM run's worth of an ADD (~3 ms for an exec), and else
// first, with IPAM run only once it succeeded. Its error is the one
// reported, and a reservation made meanwhile is released by the undo.
//
// At the same time, IPAM keeps the calling goroutine and the links get a
// new one (in this thread's namespace): host-local's path, whose record
// sync is the longest step, then starts at once, where a new goroutine
// waited for a free P behind the link work (~0.3 ms of a bridge ADD).
func (t *Attach) IPAM(ctx context.Context, ipamType string, idx int, links func() error) (*current.Result, error) {
	if links == nil {
		links = func() error { return nil }
	}
	var r types.Result
	add := func() error {
		var err error
		r, err = t.Args.IPAM(ctx, "ADD", ipamType)
		return err
	}
	var err error
	switch {
	case ipamType == "":
		return nil, links()
	case ipamIndependent(ipamType):
		done := netns.Go(links)
		ipamErr := add()
		err = cmp.Or(<-done, t.reserved(ctx, ipamType, ipamErr))
	default:
		if err = links(); err == nil {
			err = t.reserved(ctx, ipamType, add())
		}
	}
	if err != nil {
		return nil, err
	}
	res, err := cniplugin.IPAMResult(ipamType, r)
	if err != nil {
		return nil, err
	}
	for _, ipc := range res.IPs {
		ipc.Interface = current.Int(idx)
	}
	return res, nil
}

// reserved registers the release of IPAM's reservation once its ADD, which
// returned err, succeeded; it returns err.
func (t *Attach) reserved(ctx context.Context, ipamType string, err error) error {
	if err != nil {
		return err
	}
	t.Undo.Push("release IPAM", func() error {
		_, err := t.Args.IPAM(context.WithoutCancel(ctx), "DEL", ipamType)
		return err
	})
	return nil
}

// Finish ends the ADD of a plugin whose one interface is CNI_IFNAME in the
// container, once it exists and IPAM ran: the result lists it with IPAM's
// addresses and routes (ipam nil: none), the interface is configured from
// it (Configure), and the result carries the DNS of conf or IPAM (DNS).
//
// One visit to the container's namespace reads the link for the result and
// configures it.
func (t *Attach) Finish(ipam *current.Result, conf types.DNS, o Options) (*current.Result, error) {
	iface := &current.Interface{Name: t.Args.IfName, Sandbox: t.Args.Netns}
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion, Interfaces: []*current.Interface{iface}}
	if ipam != nil {
		res.IPs, res.Routes, res.DNS = ipam.IPs, ipam.Routes, ipam.DNS
	}
	err := netns.DoFile(t.Netns, func() error {
		l, err := link.ByName(iface.Name)
		if err != nil {
			return err
		}
		iface.Mac = l.Attrs().HardwareAddr.String()
		if err := configureLink(l, res, o); err != nil {
			return fmt.Errorf("configuring %q in %s: %w", iface.Name, t.Args.Netns, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	res.DNS = DNS(conf, res.DNS)
	return res, nil
}
