package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/netns"
)

// defaultLeaseTime is what a server that names no lease time gives, as the
// reference assumes; resendDelay0 is RFC 2131's first retransmission delay;
// maxNakRestarts bounds the restarts without delay after a DHCPNAK.
const (
	defaultLeaseTime = time.Hour
	resendDelay0     = 4 * time.Second
	maxNakRestarts   = 3
)

// record is a lease as the daemon saves it: enough to renew and release
// it after a restart.
type record struct {
	ClientID    string    `json:"clientID"`
	ContainerID string    `json:"containerID"`
	Network     string    `json:"network"`
	IfName      string    `json:"ifname"`
	Netns       string    `json:"netns"` // as the daemon opens it (-hostprefix applied)
	Conf        []byte    `json:"conf"`  // the ADD's configuration, for the options
	Args        string    `json:"args"`  // the ADD's CNI_ARGS, for the options' fromArg
	Offer       []byte    `json:"offer"`
	ACK         []byte    `json:"ack"`
	Acquired    time.Time `json:"acquired"` // when the ACK came, the lease's times count from it
}

// lease is a record being maintained: renewed in the background until
// stopped. mu guards the record and dhcp, which a renewal replaces while
// a verb reads them.
type lease struct {
	mu sync.Mutex
	record
	dhcp   *nclient4.Lease
	opts   []dhcpv4.Option
	cancel context.CancelFunc
	done   chan struct{}
}

// decode rebuilds a saved lease.
func (r record) decode() (*lease, error) {
	offer, err := dhcpv4.FromBytes(r.Offer)
	if err != nil {
		return nil, fmt.Errorf("its offer: %w", err)
	}
	ack, err := dhcpv4.FromBytes(r.ACK)
	if err != nil {
		return nil, fmt.Errorf("its ACK: %w", err)
	}
	c, err := load(r.Conf, r.Args)
	if err != nil {
		return nil, err
	}
	return &lease{record: r, dhcp: &nclient4.Lease{Offer: offer, ACK: ack, CreationTime: r.Acquired}, opts: c.opts}, nil
}

// commit takes a new ACK as the lease's.
func (l *lease) commit(nl *nclient4.Lease) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.dhcp = nl
	l.Offer, l.ACK, l.Acquired = nl.Offer.ToBytes(), nl.ACK.ToBytes(), nl.CreationTime
}

// times are the lease's renewal time (T1, by default half the lease) and
// its expiry.
func (l *lease) times() (renew, expire time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ack := l.dhcp.ACK
	total := ack.IPAddressLeaseTime(defaultLeaseTime)
	return l.Acquired.Add(ack.IPAddressRenewalTime(total / 2)), l.Acquired.Add(total)
}

// modifiers are what every message of the lease carries: the client ID,
// the configured options and, with -broadcast, the flag asking the server
// to broadcast its answers.
func (l *lease) modifiers(broadcast bool) []dhcpv4.Modifier {
	mods := []dhcpv4.Modifier{l.idOption(), func(d *dhcpv4.DHCPv4) {
		for _, o := range l.opts {
			d.Options.Update(o)
		}
	}}
	if broadcast {
		mods = append(mods, dhcpv4.WithBroadcast(true))
	}
	return mods
}

// idOption is the client identifier option, of type 0 as the reference sends it.
func (l *lease) idOption() dhcpv4.Modifier {
	return dhcpv4.WithOption(dhcpv4.OptClientIdentifier(append([]byte{0}, l.ClientID...)))
}

// result is the lease as a CNI result: the address, the gateway and the
// routes, in the reference's way (option 121's routes alone when the
// server sends them, else option 33's and a default route via the router).
func (l *lease) result(priority int) (*current.Result, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ack := l.dhcp.ACK
	mask := ack.SubnetMask()
	if mask == nil {
		return nil, errors.New("the DHCP server's ACK has no subnet mask (option 1); configure one on the server")
	}
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion, IPs: []*current.IPConfig{{
		Address: net.IPNet{IP: ack.YourIPAddr.To4(), Mask: mask},
		Gateway: gateway(ack),
	}}}
	res.Routes = routes(ack)
	if priority != 0 {
		for _, r := range res.Routes {
			r.Priority = priority
		}
	}
	return res, nil
}

func gateway(ack *dhcpv4.DHCPv4) net.IP {
	if gws := ack.Router(); len(gws) > 0 {
		return gws[0].To4()
	}
	return nil
}

func routes(ack *dhcpv4.DHCPv4) []*types.Route {
	out := []*types.Route{}
	if classless := ack.ClasslessStaticRoute(); len(classless) > 0 {
		for _, r := range classless {
			rt := &types.Route{Dst: *r.Dest, GW: r.Router}
			if r.Router.IsUnspecified() {
				scope := int(netlink.SCOPE_LINK) // on-link: installed without a gateway
				rt.Scope = &scope
			}
			out = append(out, rt)
		}
		return out
	}
	static := ack.Options.Get(dhcpv4.OptionStaticRoutingTable)
	for ; len(static) >= 8; static = static[8:] {
		dst := net.IP(static[0:4])
		out = append(out, &types.Route{Dst: net.IPNet{IP: dst, Mask: dst.DefaultMask()}, GW: net.IP(static[4:8])})
	}
	if gw := gateway(ack); gw != nil {
		out = append(out, &types.Route{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, GW: gw})
	}
	return out
}

// client opens a DHCP client on ifName in the namespace at path, setting the
// link up first as the reference does. Only the socket is made there: the
// exchange runs on any thread. The link's hardware address is taken from
// the lookup, which spares nclient4.New one of its two dumps of every link.
func (d *Daemon) client(path, ifName string) (*nclient4.Client, error) {
	var c *nclient4.Client
	err := netns.Do(path, func() error {
		link, err := netlink.LinkByName(ifName)
		if err != nil {
			return fmt.Errorf("interface %q: %w", ifName, err)
		}
		if link.Attrs().Flags&net.FlagUp == 0 {
			if err := netlink.LinkSetUp(link); err != nil {
				return fmt.Errorf("setting %q up: %w", ifName, err)
			}
		}
		conn, err := nclient4.NewRawUDPConn(ifName, nclient4.ClientPort)
		if err != nil {
			return fmt.Errorf("a DHCP socket on %q: %w", ifName, err)
		}
		if c, err = nclient4.NewWithConn(conn, link.Attrs().HardwareAddr, nclient4.WithTimeout(d.o.Timeout)); err != nil {
			conn.Close()
		}
		return err
	})
	return c, err
}

// exchange runs fn until it succeeds, waiting between tries as RFC 2131
// says (4 s doubling, +-1 s, at most -resendmax) and giving up after
// -resendtimeout, or at once when the lease's interface is gone: no answer
// can come through it any more (its pod went, or the interface plugin's
// ADD failed and deleted it). A DHCPNAK restarts at once instead, up to
// maxNakRestarts times (RFC 2131 3.1: the client restarts): a server that
// offered one address to two clients at the same moment refuses the
// second's request, and that pod need not wait seconds for the next free
// address.
func (d *Daemon) exchange(ctx context.Context, l *lease, fn func(context.Context) (*nclient4.Lease, error)) (*nclient4.Lease, error) {
	ctx, cancel := context.WithTimeout(ctx, d.o.ResendTimeout)
	defer cancel()
	delay := resendDelay0
	for naks := 0; ; {
		nl, err := fn(ctx)
		if err == nil {
			return nl, nil
		}
		if gerr := l.vanished(); gerr != nil {
			return nil, fmt.Errorf("%w (the exchange failed: %w)", gerr, err)
		}
		if nak := (*nclient4.ErrNak)(nil); errors.As(err, &nak) && naks < maxNakRestarts && ctx.Err() == nil {
			naks++
			continue
		}
		wait := delay + time.Duration(rand.Int64N(int64(2*time.Second))) - time.Second
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no lease after %s (the daemon's -resendtimeout): %w", d.o.ResendTimeout, err)
		case <-time.After(wait):
		}
		delay = min(2*delay, d.o.ResendMax)
	}
}

// acquire runs DISCOVER, OFFER, REQUEST, ACK on the lease's interface.
// The server may have granted a REQUEST whose ACK the daemon never heard
// (lost, or the interface deleted under the exchange by an interface
// plugin's ADD undoing itself once the dhcp plugin it ran was killed):
// every offer requested but the one acquired is released, else the server
// would keep its address, which nobody holds, until it expires.
func (d *Daemon) acquire(ctx context.Context, l *lease) error {
	c, err := d.client(l.Netns, l.IfName)
	if err != nil {
		return netns.CNIError(err, l.Netns)
	}
	// Closed off the ADD's path: the close waits for the client's reader
	// to wake up and end, up to a few ms on a busy node.
	defer func() { go c.Close() }()
	mods := l.modifiers(d.o.Broadcast)
	var requested []*dhcpv4.DHCPv4
	nl, err := d.exchange(ctx, l, func(ctx context.Context) (*nclient4.Lease, error) {
		offer, err := c.DiscoverOffer(ctx, mods...)
		if err != nil {
			return nil, err
		}
		requested = append(requested, offer)
		return c.RequestFromOffer(ctx, offer, mods...)
	})
	d.releaseUnheard(l, requested, nl)
	if err != nil {
		return netconf.Errorf(netconf.CodeTryAgainLater, "no DHCP lease on %s; check that a DHCP server answers on its network: %w", l.IfName, err)
	}
	l.commit(nl)
	return nil
}

// releaseUnheard releases the addresses of the offers requested, but the
// one of the lease acquired (got, nil when none was).
func (d *Daemon) releaseUnheard(l *lease, requested []*dhcpv4.DHCPv4, got *nclient4.Lease) {
	done := map[string]bool{}
	if got != nil {
		done[binding(got.ACK)] = true
	}
	log := d.o.Log.With("clientID", l.ClientID, "ifname", l.IfName, "netns", l.Netns)
	for _, offer := range requested {
		if done[binding(offer)] {
			continue
		}
		done[binding(offer)] = true
		if err := sendRelease(l.Netns, offer, l.idOption()); err != nil {
			log.Warn("DHCPRELEASE of an address requested without an ACK heard not sent; the server may keep it until it expires", "address", offer.YourIPAddr, "err", err)
			continue
		}
		log.Info("released an address requested without an ACK heard", "address", offer.YourIPAddr)
	}
}

// binding names the address a server's message gives: the server and the
// address.
func binding(m *dhcpv4.DHCPv4) string {
	return m.ServerIdentifier().String() + "/" + m.YourIPAddr.String()
}

// renew asks the lease's server to extend it (RFC 2131's RENEWING; after
// T2 any server may answer, as nclient4 broadcasts either way).
func (d *Daemon) renew(ctx context.Context, l *lease) error {
	c, err := d.client(l.Netns, l.IfName)
	if err != nil {
		return err
	}
	defer c.Close()
	nl, err := d.exchange(ctx, l, func(ctx context.Context) (*nclient4.Lease, error) {
		return c.Renew(ctx, l.dhcp, l.modifiers(d.o.Broadcast)...)
	})
	if err != nil {
		return err
	}
	l.commit(nl)
	return nil
}

// maintain renews the lease at T1 until ctx ends. When the interface or
// its namespace is gone it stops: the record stays for DEL's release. At
// expiry the interface goes down, as the reference does, since its address
// may be handed to another client.
func (d *Daemon) maintain(ctx context.Context, l *lease, log *slog.Logger) {
	defer close(l.done)
	next, _ := l.times()
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(next)):
		}
		err := d.renew(ctx, l)
		_, expire := l.times()
		switch {
		case err == nil:
			next, _ = l.times()
			log.Info("lease renewed", "address", l.dhcp.ACK.YourIPAddr, "expires", expire)
			if err := d.save(l); err != nil {
				log.Error("saving the renewed lease", "err", err)
			}
		case ctx.Err() != nil:
			return
		case gone(err):
			log.Info("interface gone, renewals stop; DEL releases the lease", "err", err)
			return
		case time.Now().After(expire):
			log.Error("lease expired without renewal, setting the interface down", "err", err)
			d.down(l, log)
			return
		default:
			next = time.Now().Add(max(time.Until(expire)/2, resendDelay0)) // RFC 2131: half the time left
			log.Warn("renewal failed, retrying", "err", err, "at", next)
		}
	}
}

// gone says whether err means the lease's namespace or interface no longer exists.
func gone(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.Is(err, netns.ErrGone) || errors.As(err, &nf)
}

// vanished returns the error of looking the lease's interface up when it
// or its namespace is gone, else nil.
func (l *lease) vanished() error {
	err := netns.Do(l.Netns, func() error {
		_, err := netlink.LinkByName(l.IfName)
		return err
	})
	if gone(err) {
		return err
	}
	return nil
}

func (d *Daemon) down(l *lease, log *slog.Logger) {
	err := netns.Do(l.Netns, func() error {
		link, err := netlink.LinkByName(l.IfName)
		if err == nil {
			err = netlink.LinkSetDown(link)
		}
		return err
	})
	if err != nil {
		log.Error("setting the interface down", "err", err)
	}
}

// release sends DHCPRELEASE for the lease.
func (d *Daemon) release(l *lease) error { return sendRelease(l.Netns, l.dhcp.ACK, l.idOption()) }

// sendRelease sends DHCPRELEASE, with the client ID id, for the address the
// server's msg (its ACK, or an offer requested) gives: from the pod's
// namespace at netnsPath while it can route to the server, else from the
// daemon's own, so the server frees the address also after the pod's
// interface or namespace is gone. The server knows the lease by the client
// ID and hardware address in the message, not by where it came from.
func sendRelease(netnsPath string, msg *dhcpv4.DHCPv4, id dhcpv4.Modifier) error {
	rel, err := dhcpv4.NewReleaseFromACK(msg, id)
	if err != nil {
		return fmt.Errorf("building the DHCPRELEASE: %w", err)
	}
	server := &net.UDPAddr{IP: msg.ServerIdentifier(), Port: dhcpv4.ServerPort}
	if server.IP == nil {
		return errors.New("the server's answer has no server identifier (option 54) to send the DHCPRELEASE to")
	}
	send := func() error { return sendTo(server, rel.ToBytes()) }
	if err := netns.Do(netnsPath, send); err == nil {
		return nil
	}
	return send()
}

func sendTo(addr *net.UDPAddr, b []byte) error {
	conn, err := net.DialUDP("udp4", nil, addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = conn.Write(b)
	return err
}
