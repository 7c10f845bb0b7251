package cniplugin

import (
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"strings"
	"syscall"

	"github.com/containernetworking/cni/pkg/skel"
)

// newLogger logs to stderr (the runtime keeps it) or to the conf's logFile,
// every line keyed by the attachment. stdout is reserved for the CNI result.
func newLogger(plugin, cmd string, sa *skel.CmdArgs) *slog.Logger {
	var c struct {
		LogFile  string `json:"logFile"`
		LogLevel string `json:"logLevel"`
	}
	_ = json.Unmarshal(sa.StdinData, &c) // an unreadable conf is reported by the plugin itself
	var w io.Writer = os.Stderr
	if c.LogFile != "" {
		// O_NONBLOCK: a FIFO without a reader fails the open (ENXIO) instead
		// of blocking the plugin; regular files ignore it.
		if f, err := os.OpenFile(c.LogFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0o600); err == nil {
			w = f // closed by process exit; plugins are short-lived
		}
	}
	h := slog.NewTextHandler(w, &slog.HandlerOptions{Level: parseLevel(c.LogLevel)})
	return slog.New(h).With("plugin", plugin, "cmd", cmd,
		"containerID", sa.ContainerID, "ifname", sa.IfName, "netns", sa.Netns)
}

// parseLevel defaults to warnings: runtimes copy a plugin's stderr into their
// own logs on every call, so a quiet success keeps them readable.
func parseLevel(s string) slog.Level {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug
	case "info", "verbose":
		return slog.LevelInfo
	case "error", "panic":
		return slog.LevelError
	}
	return slog.LevelWarn
}
