package portmap

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"

	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/netfilter/hostport"
)

// flushUDPConntrack deletes the conntrack entries of the UDP host ports,
// none when the namespace tracks no connection at all. Each port is one
// filtered flush, which the kernel (6.11 and later) runs in place; older
// kernels reject it and get the dump-and-delete of every entry, which
// walks the whole conntrack hash table (10 ms with 262144 buckets).
func flushUDPConntrack(c *hostport.Conf, addrs []netip.Prefix) error {
	for _, p := range addrs {
		var ports []uint16
		for _, m := range c.MapsFor(p.Addr()) {
			if m.Protocol == "udp" {
				ports = append(ports, m.HostPort)
			}
		}
		if len(ports) == 0 || conntrackEmpty() {
			continue
		}
		if err := flushPorts(family.Of(p.Addr()), ports); err != nil {
			return err
		}
	}
	return nil
}

func flushPorts(f family.Family, ports []uint16) error {
	for i, port := range ports {
		if err := filteredFlush(f, port); err != nil {
			return dumpAndDelete(f, ports[i:])
		}
	}
	return nil
}

// Attributes of a conntrack flush filtered in the kernel
// (linux/netfilter/nfnetlink_conntrack.h).
const (
	ctaTupleOrig        = 1
	ctaTupleProto       = 2
	ctaProtoNum         = 1
	ctaProtoDstPort     = 3
	ctaFilter           = 25
	ctaFilterOrigFlags  = 1
	ctaFilterReplyFlags = 2
	// CTA_FILTER_FLAG(CTA_PROTO_NUM) | CTA_FILTER_FLAG(CTA_PROTO_DST_PORT)
	filterProtoDstPort = 1<<3 | 1<<5
	ipctnlMsgCtDelete  = 2
)

// filteredFlush asks the kernel to delete the family's UDP entries whose
// original destination port is port. A kernel without filtered flushes
// sees a tuple without addresses and answers EINVAL: nothing is deleted.
func filteredFlush(f family.Family, port uint16) error {
	req := nl.NewNetlinkRequest(unix.NFNL_SUBSYS_CTNETLINK<<8|ipctnlMsgCtDelete, unix.NLM_F_ACK)
	req.AddData(&nl.Nfgenmsg{NfgenFamily: uint8(f.Netlink()), Version: unix.NFNETLINK_V0})
	orig := nl.NewRtAttr(ctaTupleOrig|unix.NLA_F_NESTED, nil)
	proto := orig.AddRtAttr(ctaTupleProto|unix.NLA_F_NESTED, nil)
	proto.AddRtAttr(ctaProtoNum, []byte{unix.IPPROTO_UDP})
	proto.AddRtAttr(ctaProtoDstPort, binary.BigEndian.AppendUint16(nil, port))
	req.AddData(orig)
	filter := nl.NewRtAttr(ctaFilter|unix.NLA_F_NESTED, nil)
	filter.AddRtAttr(ctaFilterOrigFlags, binary.NativeEndian.AppendUint32(nil, filterProtoDstPort))
	filter.AddRtAttr(ctaFilterReplyFlags, binary.NativeEndian.AppendUint32(nil, 0))
	req.AddData(filter)
	_, err := req.Execute(unix.NETLINK_NETFILTER, 0)
	return err
}

// dumpAndDelete is the flush of kernels before 6.11: one dump of the
// family's table, deleting what matches.
func dumpAndDelete(f family.Family, ports []uint16) error {
	filters := make([]netlink.CustomConntrackFilter, 0, len(ports))
	for _, port := range ports {
		f := &netlink.ConntrackFilter{}
		if err := f.AddProtocol(unix.IPPROTO_UDP); err != nil {
			return err
		}
		if err := f.AddPort(netlink.ConntrackOrigDstPort, port); err != nil {
			return err
		}
		filters = append(filters, f)
	}
	if _, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, netlink.InetFamily(f.Netlink()), filters...); err != nil {
		return fmt.Errorf("deleting UDP conntrack entries: %w", err)
	}
	return nil
}

// conntrackEmpty reads the namespace's count of tracked connections; when
// it cannot, it says no, so that the flush happens.
func conntrackEmpty() bool {
	b, err := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_count")
	return err == nil && strings.TrimSpace(string(b)) == "0"
}
