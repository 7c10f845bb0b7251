// Command mkimage packs the DaemonSet's image (make image, make release):
// subnetd, subnetd-kube and cnictl in /usr/local/bin, the plugins in
// /opt/cni/bin for cnictl install to copy onto the node, and the iptables
// that subnetd runs for its host rules (this machine's iptables-nft, its
// shared libraries and extensions): nothing else, not even a shell. It
// writes an OCI archive that `ctr -n k8s.io images import` takes, and
// prints the image's name and the archive's path.
//
//	go run ./scripts/mkimage -plugins bin -daemons bin/daemon -name localhost/cnisuite/subnetd:v1 -out image.tar
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cnisuite/cni/internal/ociimage"
)

// daemons are the programs of -daemons the image holds; subnetd-etcd is
// left out: a cluster's nodes share an etcd, none embeds one.
var daemons = []string{"subnetd", "subnetd-kube", "cnictl"}

// iptablesNames are the commands pkg/netfilter/iptables runs, each a link to the
// multi-call binary as Debian installs them.
var iptablesNames = []string{"iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"}

func main() {
	plugins := flag.String("plugins", "bin", "the directory of the built plugins")
	daemonDir := flag.String("daemons", "bin/daemon", "the directory of the built subnetd, subnetd-kube and cnictl")
	name := flag.String("name", "", "the image's reference, registry/repository:tag")
	out := flag.String("out", "", "the archive to write")
	epoch := flag.Int64("epoch", 0, "the image's time, Unix seconds (the commit's, for reproducible bytes)")
	flag.Parse()
	if *name == "" || *out == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: mkimage -name REF -out FILE [-plugins DIR] [-daemons DIR] [-epoch SECONDS]")
		os.Exit(2)
	}
	if err := run(*plugins, *daemonDir, *name, *out, time.Unix(*epoch, 0)); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
	fmt.Println(*name)
	fmt.Println(*out)
}

func run(pluginDir, daemonDir, name, out string, created time.Time) error {
	files, err := suiteFiles(pluginDir, daemonDir)
	if err != nil {
		return err
	}
	ipt, err := iptablesFiles()
	if err != nil {
		return err
	}
	img := ociimage.Image{Name: name, Files: append(files, ipt...), Created: created,
		Entrypoint: []string{"/usr/local/bin/subnetd"},
		Env:        []string{"PATH=/usr/local/bin:/usr/sbin:/usr/bin"},
		Labels:     map[string]string{"org.opencontainers.image.title": "cnisuite subnetd and CNI plugins"}}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	_, err = ociimage.Write(f, img)
	return errors.Join(err, f.Close())
}

// suiteFiles are the daemons and every plugin.
func suiteFiles(pluginDir, daemonDir string) ([]ociimage.File, error) {
	var files []ociimage.File
	for _, d := range daemons {
		f, err := ociimage.FromHost(filepath.Join(daemonDir, d), "/usr/local/bin/"+d)
		if err != nil {
			return nil, fmt.Errorf("%w (run make build first)", err)
		}
		files = append(files, f)
	}
	entries, err := os.ReadDir(pluginDir)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue // bin/daemon
		}
		f, err := ociimage.FromHost(filepath.Join(pluginDir, e.Name()), "/opt/cni/bin/"+e.Name())
		if err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	if len(files) == len(daemons) {
		return nil, fmt.Errorf("no plugin in %s (run make build first)", pluginDir)
	}
	return files, nil
}

// iptablesFiles are this machine's iptables-nft multi-call binary, the
// links by which it is run, its extensions, and the shared libraries and
// loader they need, each at the path the loader looks for it.
func iptablesFiles() ([]ociimage.File, error) {
	multi, err := exec.LookPath("xtables-nft-multi")
	if err != nil {
		return nil, fmt.Errorf("%w: install iptables (Debian: apt-get install iptables)", err)
	}
	exts, err := filepath.Glob("/usr/lib/*-linux-gnu/xtables/*.so")
	if err != nil || len(exts) == 0 {
		return nil, fmt.Errorf("no iptables extensions in /usr/lib/*-linux-gnu/xtables (%v)", err)
	}
	objects := append([]string{multi}, exts...)
	libs, err := sharedLibraries(objects)
	if err != nil {
		return nil, err
	}
	var files []ociimage.File
	for _, p := range append(objects, libs...) {
		f, err := ociimage.FromHost(p, p)
		if err == nil && f.Mode.Type() != 0 { // a link: the file it names, at the link's path
			var real string
			if real, err = filepath.EvalSymlinks(p); err == nil {
				f, err = ociimage.FromHost(real, p)
			}
		}
		if err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	for _, n := range iptablesNames {
		files = append(files, ociimage.File{Path: "/usr/sbin/" + n, Mode: os.ModeSymlink | 0o777, Data: []byte(filepath.Base(multi))})
	}
	return files, nil
}

// sharedLibraries are the libraries and loader ldd finds for objects,
// each once, sorted.
func sharedLibraries(objects []string) ([]string, error) {
	out, err := exec.Command("ldd", objects...).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd: %w", err)
	}
	var libs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		// "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "\t/lib64/ld-linux-x86-64.so.2 (0x...)"
		fields := strings.Fields(sc.Text())
		switch {
		case len(fields) == 4 && fields[1] == "=>":
			libs = append(libs, fields[2])
		case len(fields) == 2 && filepath.IsAbs(fields[0]):
			libs = append(libs, fields[0])
		}
	}
	slices.Sort(libs)
	return slices.Compact(libs), sc.Err()
}
