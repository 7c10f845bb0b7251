package labkit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// TestLab is a lab that is a test, because the fixtures it runs on
// (test/kube's) take a testing.TB and must stay out of non-test code: the
// bench builds the test binary of Pkg, runs Test in it with the request's
// JSON file named by EnvVar, and reads the result back as JSON.
type TestLab struct {
	Repo   string // the module root
	Pkg    string // e.g. "./bench/kubelab"
	Test   string // e.g. "TestKubeLab"
	EnvVar string // holds the request file's path
}

// Run runs the lab with req, its files and log under dir, and decodes its
// result (written to the path the request's Out names) into res.
// Interrupting ctx makes the lab clean up: it gets SIGTERM, not SIGKILL.
func (l TestLab) Run(ctx context.Context, dir string, req, res any, out string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	bin := filepath.Join(dir, filepath.Base(l.Pkg)+".test")
	build := exec.CommandContext(ctx, "go", "test", "-c", "-o", bin, l.Pkg)
	build.Dir = l.Repo
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("building %s: %w\n%s", l.Pkg, err, out)
	}
	reqFile := filepath.Join(dir, "request.json")
	if err := WriteJSON(reqFile, req); err != nil {
		return err
	}
	logFile := filepath.Join(dir, filepath.Base(l.Pkg)+".log")
	log, err := os.Create(logFile)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.CommandContext(ctx, bin, "-test.run", "^"+l.Test+"$", "-test.v", "-test.timeout", "60m")
	// test/kube finds the Kubernetes binaries' build script from the
	// module of its working directory.
	cmd.Dir = filepath.Join(l.Repo, l.Pkg)
	cmd.Env = append(os.Environ(), l.EnvVar+"="+reqFile)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 2 * time.Minute
	runErr := cmd.Run()
	raw, err := os.ReadFile(out)
	if err == nil {
		err = json.Unmarshal(raw, res)
	}
	if runErr != nil || err != nil {
		return fmt.Errorf("%s: %w; the end of its log (%s):\n%s", l.Test, errors.Join(runErr, err), logFile, tail(logFile, 30))
	}
	return nil
}

// ReadRequest reads the request of a lab test from the file $envVar names;
// false when it is unset (a plain go test, which then skips the lab).
func ReadRequest(envVar string, req any) (bool, error) {
	path := os.Getenv(envVar)
	if path == "" {
		return false, nil
	}
	raw, err := os.ReadFile(path)
	if err == nil {
		err = json.Unmarshal(raw, req)
	}
	if err != nil {
		return true, fmt.Errorf("reading the request %s: %w", path, err)
	}
	return true, nil
}

// WriteJSON writes v to path, indented.
func WriteJSON(path string, v any) error {
	raw, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, raw, 0o644)
}

// tail is the last n lines of a file.
func tail(path string, n int) string {
	raw, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
