package subnetd

import (
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/overlay"
	"github.com/cnisuite/cni/pkg/subnet"
)

// peerFilter turns lease entries into peers, skipping those that cannot be
// programmed: malformed ones, those that are not the network's
// (subnet.LeasePeers) and those that would take over this node's addresses
// or routes (overlay.Host.Conflict). A skip is logged once per lease revision
// and reason, not at every reconcile. It keeps what it read of each key at
// its revision, so that a view in which one lease changed costs the
// decoding of that one lease, and checks the leases against the node again
// only when a read of the node found it changed.
type peerFilter struct {
	config  subnet.Config
	log     *slog.Logger
	host    overlay.Host
	hostGen uint64 // counts the changes of host; 0 until the first setHost
	cache   map[subnet.Subnets]decoded
	gen     uint64 // of the last call; entries of older ones are gone
}

// decoded is one lease as read at its revision, and as judged against the
// node.
type decoded struct {
	rev     int64
	peers   [2]*overlay.Peer // per family: what the lease asks of the other nodes
	err     error            // why no node can program it
	hostGen uint64           // the host skip was decided against
	skip    string           // why it is not programmed here; "" when it is
	gen     uint64
}

// setHost adopts a read of the node (overlay.ReadHost).
func (f *peerFilter) setHost(h overlay.Host) {
	if f.hostGen == 0 || !h.Equal(f.host) {
		f.host = h
		f.hostGen++
	}
}

// setConfig adopts the network config as the source now reports it (in
// the Kubernetes API mode, with the subnet length of this node's pod
// CIDRs); the leases are judged again.
func (f *peerFilter) setConfig(c subnet.Config) {
	if c != f.config {
		f.config, f.cache = c, nil
	}
}

// knowsHost reports whether setHost was called: without a read of the node
// no lease can be checked against it.
func (f *peerFilter) knowsHost() bool { return f.hostGen > 0 }

// peers returns the peers to program and how many other leases are skipped.
func (f *peerFilter) peers(entries []subnet.Entry, own subnet.Subnets) (out peerSet, skipped int) {
	if f.cache == nil {
		f.cache = map[subnet.Subnets]decoded{}
	}
	f.gen++
	for _, e := range entries {
		if e.Subnets == own {
			continue
		}
		c, ok := f.cache[e.Subnets]
		fresh := !ok || c.rev != e.Rev
		if fresh {
			c = decoded{rev: e.Rev}
			c.peers[family.IPv4], c.peers[family.IPv6], c.err = f.decode(e)
		}
		if fresh || c.hostGen != f.hostGen {
			f.judge(&c, e.Subnets)
		}
		c.gen = f.gen
		f.cache[e.Subnets] = c
		if c.skip != "" {
			skipped++
			continue
		}
		for _, fam := range family.All() {
			p := c.peers[fam]
			if p == nil {
				continue
			}
			if out[fam] == nil {
				out[fam] = make([]overlay.Peer, 0, len(entries)) // one allocation, not a growing copy
			}
			out[fam] = append(out[fam], *p)
		}
	}
	if len(f.cache) > len(entries) {
		for k, c := range f.cache {
			if c.gen != f.gen {
				delete(f.cache, k)
			}
		}
	}
	return out, skipped
}

// decode reads one lease: the network's subnets, same backend, same VNI, a
// usable public address.
func (f *peerFilter) decode(e subnet.Entry) (v4, v6 *overlay.Peer, err error) {
	var a subnet.Attrs
	if err := json.Unmarshal(e.Value, &a); err != nil {
		return nil, nil, fmt.Errorf("bad lease JSON: %w", err)
	}
	return subnet.LeasePeers(f.config, e.Subnets, a)
}

// judge decides whether the lease is programmed on this node, logging a
// skip whose reason is new.
func (f *peerFilter) judge(c *decoded, s subnet.Subnets) {
	c.hostGen = f.hostGen
	err := c.err
	if err == nil {
		err = f.host.NodeConflict(c.peers[family.IPv4], c.peers[family.IPv6])
	}
	why := ""
	if err != nil {
		why = err.Error()
	}
	if why != "" && why != c.skip {
		f.log.Warn("skipping a lease that cannot be programmed", "key", s.Key(), "reason", why)
	}
	c.skip = why
}
