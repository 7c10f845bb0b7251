package netnstest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/cnisuite/cni/pkg/netns"
)

// HTTP makes one HTTP/1.0 request from inside the namespace and returns the
// status code (0 when nothing answered) and the body. The socket is opened
// on the thread that entered the namespace, which an http.Client's dialer
// cannot promise.
func (n *NS) HTTP(addr, method, path string, body []byte) (code int, out string) {
	_ = netns.Do(n.Path, func() error {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		fmt.Fprintf(c, "%s %s HTTP/1.0\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", method, path, addr, len(body))
		_, _ = c.Write(body)
		r := bufio.NewReader(c)
		status, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		_, _ = fmt.Sscanf(status, "HTTP/%s %d", new(string), &code)
		rest, _ := io.ReadAll(r)
		if i := bytes.Index(rest, []byte("\r\n\r\n")); i >= 0 {
			rest = rest[i+4:]
		}
		out = string(rest)
		return nil
	})
	return code, out
}
