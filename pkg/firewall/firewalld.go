package firewall

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/cnisuite/cni/pkg/netconf"
)

// firewalld's D-Bus names, as the reference calls them.
const (
	firewalldName = "org.fedoraproject.FirewallD1"
	firewalldPath = "/org/fedoraproject/FirewallD1"
	zoneInterface = firewalldName + ".zone"
)

// systemBus is where the system bus listens unless DBUS_SYSTEM_BUS_ADDRESS
// says otherwise (/var/run is /run on every current distribution).
const systemBus = "unix:path=/run/dbus/system_bus_socket"

// busTimeout bounds each call, as a hung firewalld would hang the runtime.
const busTimeout = 10 * time.Second

// firewalld puts the pod's addresses, as sources, into a zone of firewalld
// over the D-Bus system bus; firewalld's rules then treat the pod's
// traffic as the zone's (the default, trusted, accepts it all). Sources
// are firewalld's runtime configuration: they name no attachment, and go
// when firewalld stops.
type firewalld struct {
	conn *dbus.Conn
	obj  dbus.BusObject
}

// busAddress is the system bus, or addr when set (tests).
func busAddress(addr string) string {
	if addr != "" {
		return addr
	}
	if env := os.Getenv("DBUS_SYSTEM_BUS_ADDRESS"); env != "" {
		return env
	}
	return systemBus
}

// unavailable is the error (code 50) of a bus or firewalld that is not
// there: what is missing, and what to do.
func unavailable(what string) error {
	return netconf.Errorf(netconf.CodeUnavailable, "firewalld cannot be reached: %s; start dbus and firewalld (systemctl start firewalld), or set \"backend\": \"iptables\" (or \"nftables\") in the configuration", what)
}

// dialFirewalld connects to the bus at addr and checks that firewalld is
// on it. A bus without its socket is refused before any dial.
func dialFirewalld(ctx context.Context, addr string) (*firewalld, error) {
	addr = busAddress(addr)
	if path, ok := socketPath(addr); ok {
		if _, err := os.Stat(path); err != nil {
			return nil, unavailable("the D-Bus system bus is not running (no socket at " + path + ")")
		}
	}
	conn, err := dbus.Connect(addr, dbus.WithContext(ctx))
	if err != nil {
		return nil, unavailable(fmt.Sprintf("the D-Bus system bus at %s refused the connection (%v)", addr, err))
	}
	var owner string
	if err := conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.GetNameOwner", 0, firewalldName).Store(&owner); err != nil {
		conn.Close()
		return nil, unavailable("firewalld is not running (" + firewalldName + " is not on the system bus)")
	}
	return &firewalld{conn: conn, obj: conn.Object(firewalldName, firewalldPath)}, nil
}

// socketPath is the socket of a unix:path= bus address, as in
// "unix:path=/run/dbus/system_bus_socket,guid=...".
func socketPath(addr string) (string, bool) {
	rest, ok := strings.CutPrefix(addr, "unix:")
	if !ok || strings.Contains(rest, ";") {
		return "", false
	}
	for kv := range strings.SplitSeq(rest, ",") {
		if path, ok := strings.CutPrefix(kv, "path="); ok {
			return path, true
		}
	}
	return "", false
}

// firewalldRunning is the reference's test for the default backend.
func firewalldRunning(ctx context.Context, addr string) bool {
	fw, err := dialFirewalld(ctx, addr)
	if err != nil {
		return false
	}
	fw.close()
	return true
}

func (fw *firewalld) close() { fw.conn.Close() }

// source is how firewalld names an address: a prefix of one address.
func source(a netip.Addr) string { return netip.PrefixFrom(a, a.BitLen()).String() }

func (fw *firewalld) call(ctx context.Context, method string, ret any, args ...any) error {
	ctx, cancel := context.WithTimeout(ctx, busTimeout)
	defer cancel()
	call := fw.obj.CallWithContext(ctx, zoneInterface+"."+method, 0, args...)
	if ret == nil {
		return call.Err
	}
	return call.Store(ret)
}

// add puts each address into zone. An address firewalld already has in a
// zone is left there, as the reference does; added reports those added,
// for an ADD to take back when it fails.
func (fw *firewalld) add(ctx context.Context, zone string, addrs []netip.Addr) (added []netip.Addr, err error) {
	for _, a := range addrs {
		var res string
		err := fw.call(ctx, "addSource", &res, zone, source(a))
		switch {
		case firewalldError(err, "ZONE_ALREADY_SET"):
			continue
		case firewalldError(err, "INVALID_ZONE"):
			return added, netconf.Invalid("\"firewalldZone\" %q is not a zone of firewalld; `firewall-cmd --get-zones` lists them: %w", zone, err)
		case err != nil:
			return added, fmt.Errorf("firewalld: adding source %s to zone %q: %w", source(a), zone, err)
		}
		added = append(added, a)
	}
	return added, nil
}

// remove takes each address out of zone; one that is not there is no
// error, and a failure does not stop the others.
func (fw *firewalld) remove(ctx context.Context, zone string, addrs []netip.Addr) error {
	var errs []error
	for _, a := range addrs {
		var res string
		err := fw.call(ctx, "removeSource", &res, zone, source(a))
		if err != nil && !firewalldError(err, "UNKNOWN_SOURCE") && !firewalldError(err, "INVALID_ZONE") {
			errs = append(errs, fmt.Errorf("firewalld: removing source %s from zone %q: %w", source(a), zone, err))
		}
	}
	return errors.Join(errs...)
}

// check verifies that every address is a source of zone.
func (fw *firewalld) check(ctx context.Context, zone string, addrs []netip.Addr) error {
	for _, a := range addrs {
		var in bool
		if err := fw.call(ctx, "querySource", &in, zone, source(a)); err != nil {
			return fmt.Errorf("firewalld: querying source %s of zone %q: %w", source(a), zone, err)
		}
		if !in {
			return fmt.Errorf("firewalld: %s is not a source of zone %q; DEL and ADD the attachment again", source(a), zone)
		}
	}
	return nil
}

// firewalldError tells whether err is firewalld's error code, which it
// puts at the start of the D-Bus error's message.
func firewalldError(err error, code string) bool {
	var de dbus.Error
	if !errors.As(err, &de) {
		return false
	}
	for _, b := range de.Body {
		if s, ok := b.(string); ok && strings.Contains(s, code) {
			return true
		}
	}
	return strings.Contains(de.Name, code)
}
