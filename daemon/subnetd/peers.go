package main

import (
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/cnisuite/cni/pkg/subnet"
	"github.com/cnisuite/cni/pkg/vxlan"
)

// peerFilter turns lease entries into peers, skipping (with one log line per
// key and revision) those that cannot be programmed. It keeps what it read
// of each key at its revision, so that a view in which one lease changed
// costs the decoding of that one lease.
type peerFilter struct {
	backend subnet.Backend
	log     *slog.Logger
	cache   map[subnet.Subnets]decoded
	gen     uint64 // of the last call; entries of older ones are gone
}

// decoded is one lease as read at its revision.
type decoded struct {
	rev    int64
	v4, v6 *vxlan.Peer
	gen    uint64
}

func (f *peerFilter) peers(entries []subnet.Entry, own subnet.Subnets) peerSet {
	if f.cache == nil {
		f.cache = map[subnet.Subnets]decoded{}
	}
	f.gen++
	var out peerSet
	for _, e := range entries {
		if e.Subnets == own {
			continue
		}
		c, ok := f.cache[e.Subnets]
		if !ok || c.rev != e.Rev {
			c = decoded{rev: e.Rev}
			var err error
			if c.v4, c.v6, err = f.peer(e); err != nil {
				f.log.Warn("skipping a lease that cannot be programmed", "key", e.Subnets.Key(), "error", err)
			}
		}
		c.gen = f.gen
		f.cache[e.Subnets] = c
		if c.v4 != nil {
			if out.v4 == nil {
				out.v4 = make([]vxlan.Peer, 0, len(entries)) // one allocation, not a growing copy
			}
			out.v4 = append(out.v4, *c.v4)
		}
		if c.v6 != nil {
			if out.v6 == nil {
				out.v6 = make([]vxlan.Peer, 0, len(entries))
			}
			out.v6 = append(out.v6, *c.v6)
		}
	}
	if len(f.cache) > len(entries) {
		for k, c := range f.cache {
			if c.gen != f.gen {
				delete(f.cache, k)
			}
		}
	}
	return out
}

// peer reads one lease: same backend, same VNI, a usable public address.
func (f *peerFilter) peer(e subnet.Entry) (v4, v6 *vxlan.Peer, err error) {
	var a subnet.Attrs
	if err := json.Unmarshal(e.Value, &a); err != nil {
		return nil, nil, fmt.Errorf("bad lease JSON: %w", err)
	}
	return vxlan.LeasePeers(f.backend, e.Subnets, a)
}
