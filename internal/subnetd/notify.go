package subnetd

import (
	"fmt"
	"net"
	"os"
)

// sdNotify tells the service manager about subnetd's state, as
// sd_notify(3): one datagram ("READY=1", "STOPPING=1") to the unix socket
// named by $NOTIFY_SOCKET, which systemd sets for a Type=notify unit (a
// name starting with '@' is an abstract socket; Go's net package maps it).
// Without the variable it does nothing.
func sdNotify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("telling the service manager %s: %w", state, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("telling the service manager %s: %w", state, err)
	}
	return nil
}
