// Command dhcp is the dhcp IPAM plugin (pkg/dhcp/dhcpclient) and, run as
// `dhcp daemon`, its daemon (pkg/dhcp).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/dhcp"
	"github.com/cnisuite/cni/pkg/dhcp/dhcpclient"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "daemon" {
		os.Exit(daemon(os.Args[2:]))
	}
	cniplugin.Main("dhcp", dhcpclient.Plugin{})
}

// daemon parses the reference daemon's flags (and -statedir) and serves
// until SIGTERM or SIGINT.
func daemon(args []string) int {
	o := dhcp.Options{}
	fs := flag.NewFlagSet("daemon", flag.ExitOnError)
	fs.StringVar(&o.PidFile, "pidfile", "", "optional path to write the daemon's PID to")
	fs.StringVar(&o.HostPrefix, "hostprefix", "", "optional prefix to the host's root, when run in a container")
	fs.StringVar(&o.SocketPath, "socketpath", dhcp.DefaultSocketPath, "the socket the plugin dials")
	fs.StringVar(&o.StateDir, "statedir", dhcp.DefaultStateDir, "where leases are saved, to be resumed after a restart")
	fs.BoolVar(&o.Broadcast, "broadcast", false, "ask DHCP servers to broadcast their answers")
	fs.DurationVar(&o.Timeout, "timeout", 10*time.Second, "how long one DHCP request waits for an answer")
	fs.DurationVar(&o.ResendMax, "resendmax", 62*time.Second, "the longest delay between two tries")
	fs.DurationVar(&o.ResendTimeout, "resendtimeout", 208*time.Second, "when to give up acquiring or renewing a lease")
	logLevel := fs.String("loglevel", "info", "debug, info, warn or error")
	_ = fs.Parse(args)
	if o.SocketPath == "" {
		o.SocketPath = dhcp.DefaultSocketPath
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "dhcp daemon: -loglevel %q: %v\n", *logLevel, err)
		return 2
	}
	o.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := dhcp.Run(ctx, o); err != nil {
		o.Log.Error("dhcp daemon", "err", err)
		return 1
	}
	return 0
}
