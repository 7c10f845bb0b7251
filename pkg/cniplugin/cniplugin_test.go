package cniplugin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cnisuite/cni/pkg/netconf"
)

func TestToCNIError(t *testing.T) {
	tests := []struct {
		name string
		err  error
		code uint
	}{
		{"netconf code kept", netconf.Invalid("bad subnet"), 7},
		{"wrapped netconf", fmt.Errorf("loading: %w", netconf.Errorf(11, "busy")), 11},
		{"delegate code kept", fmt.Errorf("ipam: %w", types.NewError(5, "disk", "")), 5},
		{"json syntax", json.Unmarshal([]byte("{"), &struct{}{}), 6},
		{"permission", fmt.Errorf("writing: %w", fs.ErrPermission), 5},
		{"read-only fs", &fs.PathError{Op: "open", Path: "/x", Err: syscall.EROFS}, 5},
		{"busy", fmt.Errorf("lock: %w", syscall.EAGAIN), 11},
		{"anything else", errors.New("boom"), 999},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ToCNIError(tt.err)
			if got.Code != tt.code || got.Msg == "" {
				t.Fatalf("ToCNIError(%v) = %+v, want code %d", tt.err, got, tt.code)
			}
		})
	}
	if ToCNIError(nil) != nil {
		t.Fatal("nil error must map to nil")
	}
}

func TestPrintResultConvertsToRequestedVersion(t *testing.T) {
	_, ipn, _ := net.ParseCIDR("10.1.0.5/24")
	ipn.IP = net.ParseIP("10.1.0.5").To4()
	res := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{{Name: "eth0", Sandbox: "/run/netns/x"}},
		IPs:        []*current.IPConfig{{Interface: current.Int(0), Address: *ipn}},
	}
	for _, v := range Versions() { // every version the binaries announce
		var buf bytes.Buffer
		if err := PrintResult(&buf, res, v); err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		var out struct {
			CNIVersion string `json:"cniVersion"`
			IPs        []map[string]any
		}
		if err := json.Unmarshal(buf.Bytes(), &out); err != nil {
			t.Fatalf("%s: %v\n%s", v, err, buf.String())
		}
		_, hasVersionKey := out.IPs[0]["version"]
		if out.CNIVersion != v || hasVersionKey != strings.HasPrefix(v, "0.") {
			t.Errorf("%s: printed %s", v, buf.String())
		}
	}
	if err := PrintResult(&bytes.Buffer{}, res, "9.9.9"); err == nil {
		t.Error("unknown version must fail")
	}
}

// TestVersionsIsACopy: a caller changing what Versions returned changes
// neither the next caller's list nor what the binaries announce.
func TestVersionsIsACopy(t *testing.T) {
	got := Versions()
	got[0] = "9.9.9"
	if again := Versions(); again[0] == "9.9.9" || versions[0] == "9.9.9" {
		t.Fatalf("Versions() = %v after a caller's change: want its own copy", again)
	}
}

func TestUndoRunsInReverseOnlyOnError(t *testing.T) {
	var order []int
	run := func(fail bool) (retErr error) {
		var u Undo
		defer u.OnError(&retErr, slog.New(slog.DiscardHandler))
		u.Push("one", func() error { order = append(order, 1); return nil })
		u.Push("two", func() error { order = append(order, 2); return errors.New("ignored") })
		if fail {
			return errors.New("step three failed")
		}
		return nil
	}
	_ = run(false)
	if len(order) != 0 {
		t.Fatalf("success ran undo: %v", order)
	}
	if err := run(true); err == nil || err.Error() != "step three failed" {
		t.Fatalf("error replaced: %v", err)
	}
	if fmt.Sprint(order) != "[2 1]" {
		t.Fatalf("undo order %v, want [2 1]", order)
	}
}

// TestBoundStdin: a configuration within the limit reaches skel's stdin
// whole; one over it is refused with code 6.
func TestBoundStdin(t *testing.T) {
	orig := os.Stdin
	t.Cleanup(func() { os.Stdin = orig })
	feed := func(data []byte) {
		f, err := os.CreateTemp(t.TempDir(), "stdin")
		if err != nil || f.Close() != nil || os.WriteFile(f.Name(), data, 0o600) != nil {
			t.Fatal(err)
		}
		if os.Stdin, err = os.Open(f.Name()); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("CNI_COMMAND", "ADD")
	conf := []byte(`{"cniVersion":"1.1.0","name":"n","type":"bridge"}`)
	feed(conf)
	if err := boundStdin(); err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(os.Stdin); err != nil || !bytes.Equal(got, conf) {
		t.Fatalf("skel would read %q, %v; want %q", got, err, conf)
	}
	feed(bytes.Repeat([]byte{' '}, netconf.MaxConfSize+1))
	if err := ToCNIError(boundStdin()); err == nil || err.Code != netconf.CodeDecoding {
		t.Fatalf("a configuration over the limit: %v, want code 6", err)
	}
}

// TestLogFileFIFO: a logFile naming a FIFO without a reader does not block
// the plugin; it logs to stderr instead. A regular logFile is written.
func TestLogFileFIFO(t *testing.T) {
	dir := t.TempDir()
	fifo, file := filepath.Join(dir, "fifo"), filepath.Join(dir, "log")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		newLogger("test", "ADD", &skel.CmdArgs{StdinData: []byte(`{"logFile":"` + fifo + `"}`)}).Debug("not written: below the default level")
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("opening a FIFO without reader as logFile blocked")
	}
	newLogger("test", "ADD", &skel.CmdArgs{StdinData: []byte(`{"logFile":"` + file + `"}`)}).Error("logged")
	if data, err := os.ReadFile(file); err != nil || !bytes.Contains(data, []byte("logged")) {
		t.Errorf("logFile holds %q, %v", data, err)
	}
}
