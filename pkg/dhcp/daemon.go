package dhcp

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/rpc"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/dhcp/dhcpclient"
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/regfile"
)

// Options are the daemon's settings: the reference's flags, and StateDir.
type Options struct {
	SocketPath    string        // where to listen (-socketpath)
	PidFile       string        // where to write the PID, if set (-pidfile)
	HostPrefix    string        // the node's root as the daemon sees it, prefixed to every path it opens (-hostprefix)
	StateDir      string        // where leases are saved (-statedir)
	Broadcast     bool          // ask servers to broadcast their answers (-broadcast)
	Timeout       time.Duration // one request's wait for an answer (-timeout)
	ResendMax     time.Duration // the longest wait between two tries (-resendmax)
	ResendTimeout time.Duration // when to give up an exchange (-resendtimeout)
	Log           *slog.Logger
}

// DefaultStateDir is where leases are saved: kept across a reboot, so that
// the runtime's DELs after one still release them.
const DefaultStateDir = "/var/lib/cni/dhcp"

// maxRecord bounds a saved lease's file: two DHCP packets and a configuration.
const maxRecord = 2 << 20

// Daemon holds the leases; its exported methods are the RPC service.
type Daemon struct {
	o      Options
	ctx    context.Context // ends when the daemon stops
	mu     sync.Mutex
	leases map[string]*lease // by client ID
	locks  keyLocks
}

// Run serves until ctx ends, then stops renewing without releasing: the
// next run resumes the saved leases.
func Run(ctx context.Context, o Options) error {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	d := &Daemon{o: o, ctx: ctx, leases: map[string]*lease{}}
	srv := rpc.NewServer()
	if err := srv.RegisterName("DHCP", d); err != nil {
		return err
	}
	l, err := listen(o.HostPrefix + o.SocketPath)
	if err != nil {
		return err
	}
	defer l.Close() // also on the paths that never serve; a second close is harmless
	if o.PidFile != "" {
		if err := writePid(o.PidFile); err != nil {
			return err
		}
		defer os.Remove(o.PidFile)
	}
	if err := d.restore(); err != nil {
		return err
	}
	defer d.stopAll()
	go func() {
		<-ctx.Done()
		_ = l.Close()
	}()
	o.Log.Info("serving", "socket", o.HostPrefix+o.SocketPath, "leases", len(d.leases))
	return d.serve(l, srv)
}

// serve answers each connection until the listener closes.
func (d *Daemon) serve(l net.Listener, srv *rpc.Server) error {
	for {
		conn, err := l.Accept()
		switch {
		case err == nil:
			go serveConn(conn, srv)
		case d.ctx.Err() != nil:
			return nil
		case errors.Is(err, net.ErrClosed):
			return err
		default: // out of descriptors, say: a moment, as net/http waits
			d.o.Log.Warn("accepting a connection", "err", err)
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// handshakeTimeout bounds a connection's handshake, as the plugin bounds it.
const handshakeTimeout = 10 * time.Second

// serveConn answers net/rpc's HTTP handshake (rpc.DialHTTP's CONNECT, to
// any path) as net/rpc's handler does, then serves the connection's calls.
// Written here rather than run by net/http's server, which costs each call
// ~0.15 ms more.
func serveConn(conn net.Conn, srv *rpc.Server) {
	_ = conn.SetDeadline(time.Now().Add(handshakeTimeout))
	r := bufio.NewReader(conn)
	method, err := readRequestHead(r)
	if err == nil && method != "CONNECT" {
		_, _ = io.WriteString(conn, "HTTP/1.0 405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n405 must CONNECT\n")
		err = errors.New("not a CONNECT")
	}
	if err == nil {
		_, err = io.WriteString(conn, "HTTP/1.0 200 Connected to Go RPC\n\n")
	}
	if err == nil {
		err = conn.SetDeadline(time.Time{}) // a call may take the whole -resendtimeout
	}
	if err != nil {
		conn.Close()
		return
	}
	srv.ServeConn(bufferedConn{r, conn}) // what r holds already is the first call's
}

// readRequestHead reads an HTTP request's line and header and returns its
// method.
func readRequestHead(r *bufio.Reader) (string, error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		return "", err
	}
	method, _, _ := strings.Cut(string(line), " ")
	for {
		if line, err = r.ReadSlice('\n'); err != nil || len(bytes.TrimSpace(line)) == 0 {
			return method, err
		}
	}
}

type bufferedConn struct {
	*bufio.Reader
	io.WriteCloser
}

// listen takes the socket systemd passes (cni-dhcp.socket), else makes one.
func listen(path string) (net.Listener, error) {
	if os.Getenv("LISTEN_PID") == strconv.Itoa(os.Getpid()) && os.Getenv("LISTEN_FDS") == "1" {
		l, err := net.FileListener(os.NewFile(3, "systemd socket"))
		if err != nil {
			return nil, fmt.Errorf("the socket systemd passed: %w", err)
		}
		return l, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	// A socket left by a daemon that died is in the way; a live daemon's is
	// not taken over.
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("a DHCP daemon already listens on %s; stop it first", path)
	}
	_ = os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	l.(*net.UnixListener).SetUnlinkOnClose(true)
	return l, nil
}

func writePid(path string) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("-pidfile %q is not an absolute path", path)
	}
	return regfile.Replace(path, []byte(strconv.Itoa(os.Getpid())), 0o644)
}

// Allocate gives the attachment its lease: the one it holds, else a new one.
func (d *Daemon) Allocate(req *dhcpclient.Request, res *current.Result) error {
	return rpcError(d.allocate(req, res))
}

func (d *Daemon) allocate(req *dhcpclient.Request, res *current.Result) error {
	c, err := load(req.StdinData, req.Args)
	if err != nil {
		return err
	}
	id := clientID(req.ContainerID, c.Name, req.IfName)
	defer d.locks.lock(id)()
	l := d.lease(id)
	if l == nil {
		if l, err = d.newLease(c, req, id); err != nil {
			return err
		}
	}
	r, err := l.result(c.IPAM.Priority)
	if err != nil {
		return err
	}
	*res = *r
	return nil
}

// newLease acquires, saves and starts maintaining a lease; nothing stays
// when a step fails.
func (d *Daemon) newLease(c *netConf, req *dhcpclient.Request, id string) (*lease, error) {
	if req.Netns == "" {
		return nil, netconf.Errorf(netconf.CodeInvalidEnv, "CNI_NETNS is empty: the DHCP client runs in the pod's network namespace")
	}
	l := &lease{record: record{ClientID: id, ContainerID: req.ContainerID, Network: c.Name, IfName: req.IfName,
		Netns: d.o.HostPrefix + req.Netns, Conf: req.StdinData, Args: req.Args}, opts: c.opts}
	if err := d.acquire(d.ctx, l); err != nil {
		return nil, err
	}
	if _, err := l.result(c.IPAM.Priority); err != nil {
		return nil, errors.Join(err, d.release(l))
	}
	if err := d.save(l); err != nil {
		return nil, errors.Join(err, d.release(l))
	}
	d.start(l)
	return l, nil
}

// Check returns the attachment's lease; without one it is code 3.
func (d *Daemon) Check(req *dhcpclient.Request, res *current.Result) error {
	c, err := load(req.StdinData, req.Args)
	if err != nil {
		return rpcError(err)
	}
	l := d.lease(clientID(req.ContainerID, c.Name, req.IfName))
	if l == nil {
		return rpcError(netconf.Errorf(netconf.CodeUnknownContainer, "the DHCP daemon holds no lease for %s/%s; run ADD again", req.ContainerID, req.IfName))
	}
	if _, expire := l.times(); time.Now().After(expire) {
		return rpcError(fmt.Errorf("the lease of %s/%s expired at %s and could not be renewed; check the DHCP server", req.ContainerID, req.IfName, expire))
	}
	r, err := l.result(c.IPAM.Priority)
	if err == nil {
		*res = *r
	}
	return rpcError(err)
}

// Release stops renewing the attachment's lease and releases it; without
// one there is nothing to do.
func (d *Daemon) Release(req *dhcpclient.Request, _ *struct{}) error {
	c, err := load(req.StdinData, req.Args)
	if err != nil {
		return rpcError(err)
	}
	return rpcError(d.drop(clientID(req.ContainerID, c.Name, req.IfName)))
}

// GC releases the leases of the configuration's network whose attachment
// is not in its valid list.
func (d *Daemon) GC(req *dhcpclient.Request, _ *struct{}) error {
	c, err := load(req.StdinData, req.Args)
	if err != nil {
		return rpcError(err)
	}
	valid := map[string]bool{}
	for _, a := range c.ValidList() {
		valid[clientID(a.ContainerID, c.Name, a.IfName)] = true
	}
	var errs []error
	for _, id := range d.ids() {
		if l := d.lease(id); l != nil && l.Network == c.Name && !valid[id] {
			errs = append(errs, d.drop(id))
		}
	}
	return rpcError(errors.Join(errs...))
}

// drop ends a lease: renewals stop, the release is sent, the record goes.
// A release that cannot be sent is logged: the server frees the address at
// expiry, and failing DEL for it would keep the pod from going.
func (d *Daemon) drop(id string) error {
	defer d.locks.lock(id)()
	l := d.lease(id)
	if l == nil {
		return nil
	}
	log := d.o.Log.With("clientID", id)
	l.cancel()
	<-l.done
	if err := d.release(l); err != nil {
		log.Warn("DHCPRELEASE not sent; the server keeps the address until the lease expires", "err", err)
	} else {
		log.Info("lease released", "address", l.dhcp.ACK.YourIPAddr)
	}
	if err := os.Remove(d.file(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing the saved lease: %w", err)
	}
	d.mu.Lock()
	delete(d.leases, id)
	d.mu.Unlock()
	return nil
}

func (d *Daemon) lease(id string) *lease {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.leases[id]
}

func (d *Daemon) ids() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	ids := make([]string, 0, len(d.leases))
	for id := range d.leases {
		ids = append(ids, id)
	}
	return ids
}

// start registers a lease and maintains it in the background.
func (d *Daemon) start(l *lease) {
	ctx, cancel := context.WithCancel(d.ctx)
	l.cancel, l.done = cancel, make(chan struct{})
	d.mu.Lock()
	d.leases[l.ClientID] = l
	d.mu.Unlock()
	go d.maintain(ctx, l, d.o.Log.With("clientID", l.ClientID, "ifname", l.IfName, "netns", l.Netns))
}

// stopAll ends every renewal, releasing nothing.
func (d *Daemon) stopAll() {
	for _, id := range d.ids() {
		if l := d.lease(id); l != nil {
			l.cancel()
			<-l.done
		}
	}
}

// file is where a lease is saved: the client ID holds '/', and may be long.
func (d *Daemon) file(id string) string {
	sum := sha256.Sum256([]byte(id))
	return filepath.Join(d.o.HostPrefix+d.o.StateDir, hex.EncodeToString(sum[:16])+".json")
}

func (d *Daemon) save(l *lease) error {
	l.mu.Lock()
	b, err := json.Marshal(l.record)
	l.mu.Unlock()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(d.o.HostPrefix+d.o.StateDir, 0o700); err != nil {
		return fmt.Errorf("saving the lease: %w", err)
	}
	// Not synced: a kernel crash that loses it ends the pod that held the
	// lease too, while a restarted daemon reads it from the page cache; an
	// fsync would cost every ADD 2-4 ms here.
	return regfile.ReplaceUnsynced(d.file(l.ClientID), b, 0o600)
}

// restore resumes the saved leases. One that cannot be read is logged and
// left where it is, for a person to look at.
func (d *Daemon) restore() error {
	dir := d.o.HostPrefix + d.o.StateDir
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the saved leases: %w", err)
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		l, err := readRecord(path)
		if err != nil {
			d.o.Log.Error("cannot resume a saved lease", "file", path, "err", err)
			continue
		}
		d.start(l)
	}
	return nil
}

func readRecord(path string) (*lease, error) {
	b, _, err := regfile.Read(path, maxRecord, regfile.NoFollow)
	if err != nil {
		return nil, err
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, err
	}
	return r.decode()
}

// rpcError sends an error with its CNI code (dhcpclient.DaemonError).
func rpcError(err error) error {
	if err == nil {
		return nil
	}
	ce := cniplugin.ToCNIError(err)
	b, _ := json.Marshal(dhcpclient.DaemonError{Code: ce.Code, Msg: ce.Msg})
	return errors.New(string(b))
}

// keyLocks serializes the verbs of one attachment, and only of one.
type keyLocks struct {
	mu sync.Mutex
	m  map[string]*keyLock
}

type keyLock struct {
	sync.Mutex
	users int
}

// lock takes the lock of key and returns its unlock.
func (k *keyLocks) lock(key string) func() {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyLock{}
	}
	kl := k.m[key]
	if kl == nil {
		kl = &keyLock{}
		k.m[key] = kl
	}
	kl.users++
	k.mu.Unlock()
	kl.Lock()
	return func() {
		kl.Unlock()
		k.mu.Lock()
		if kl.users--; kl.users == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}
