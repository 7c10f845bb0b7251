package dhcpclient

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/cnisuite/cni/pkg/netconf"
)

// The client's half of net/rpc over HTTP (rpc.DialHTTP): a CONNECT to
// rpcPath answered by status 200, then on the same connection each call is
// a request header and its argument, answered by a response header and the
// reply (or, after an error, an empty struct), all in gob.
const rpcPath = "/_goRPC_"

// requestHeader and responseHeader are net/rpc's Request and Response,
// which the daemon decodes and sends by field name.
type requestHeader struct {
	ServiceMethod string
	Seq           uint64
}

type responseHeader struct {
	ServiceMethod string
	Seq           uint64
	Error         string
}

// handshakeTimeout bounds the dial and the daemon's answer to it: a live
// daemon answers at once, a stopped or hung one must not hang the runtime.
var handshakeTimeout = 10 * time.Second

// daemonConn is one connection to the daemon, after the handshake.
type daemonConn struct {
	net.Conn
	r *bufio.Reader
}

// dial connects to the daemon: net/rpc's HTTP handshake, bounded in time.
// (A unix socket's connect does not wait: a full backlog is an error at
// once. net.Dialer would link DNS resolution into every interface plugin.)
func dial(socket string) (*daemonConn, error) {
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: socket, Net: "unix"})
	if err != nil {
		return nil, daemonDown(socket, err)
	}
	c := &daemonConn{Conn: conn, r: bufio.NewReader(conn)}
	if err := c.handshake(); err != nil {
		conn.Close()
		return nil, daemonDown(socket, err)
	}
	return c, nil
}

// handshake sends the CONNECT and reads the answer's status line and
// header, up to the blank line after which the daemon speaks gob.
func (c *daemonConn) handshake() error {
	_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
	if _, err := c.Write([]byte("CONNECT " + rpcPath + " HTTP/1.0\n\n")); err != nil {
		return err
	}
	status, err := c.r.ReadSlice('\n')
	if err != nil {
		return err
	}
	if f := strings.Fields(string(status)); len(f) < 2 || !strings.HasPrefix(f[0], "HTTP/") || f[1] != "200" {
		return fmt.Errorf("it answered %q", bytes.TrimSpace(status))
	}
	for {
		line, err := c.r.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(bytes.TrimSpace(line)) == 0 {
			break
		}
	}
	return c.SetDeadline(time.Time{}) // a lease may take the daemon's whole -resendtimeout
}

// call runs method with args and decodes its reply; ctx's end ends the wait.
func (c *daemonConn) call(ctx context.Context, method string, args, reply any) error {
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	var enc gobEncoder
	msg, err := enc.encode(nil, &requestHeader{ServiceMethod: method})
	if err == nil {
		msg, err = enc.encode(msg, args)
	}
	if err != nil {
		return err
	}
	if _, err := c.Write(msg); err != nil {
		return fmt.Errorf("calling the DHCP daemon's %s: %w", method, errors.Join(ctx.Err(), err))
	}
	dec := gobDecoder{r: c.r}
	var h responseHeader
	if err := dec.decode(&h); err != nil {
		return fmt.Errorf("reading the DHCP daemon's answer to %s: %w", method, errors.Join(ctx.Err(), err))
	}
	if h.Error != "" {
		return fromDaemon(method, h.Error)
	}
	if err := dec.decode(reply); err != nil {
		return fmt.Errorf("reading the DHCP daemon's answer to %s: %w", method, err)
	}
	return nil
}

func daemonDown(socket string, err error) error {
	return netconf.Errorf(netconf.CodeUnavailable, "the DHCP daemon does not answer on %s; start it with `dhcp daemon` (systemd: cni-dhcp.socket), or set ipam.daemonSocketPath to its -socketpath: %w", socket, err)
}

// DaemonError is how the daemon sends an error with its CNI code: as JSON
// in the text of net/rpc's error, the one thing its protocol carries.
type DaemonError struct {
	Code uint   `json:"code"`
	Msg  string `json:"msg"`
}

// fromDaemon turns the daemon's error back into one with its code; the
// reference's daemon sends plain text.
func fromDaemon(method, text string) error {
	var de DaemonError
	if json.Unmarshal([]byte(text), &de) == nil && de.Code != 0 {
		return &netconf.Error{Code: de.Code, Msg: de.Msg}
	}
	if strings.Contains(text, "can't find method") {
		return fmt.Errorf("the DHCP daemon has no %s: the reference plugins' daemon answers ADD and DEL only; run this suite's `dhcp daemon`", method)
	}
	return fmt.Errorf("the DHCP daemon's %s: %s", method, text)
}
