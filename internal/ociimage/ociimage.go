// Package ociimage writes container images as OCI image-layout archives,
// the tar that `ctr images import` (containerd) and `podman load` take,
// without a registry or a container daemon: one layer of the given files
// and a config with the entrypoint. The same Image gives the same bytes, so
// that a release's image is reproducible. It must not import anything of
// the suite: the build tools and the tests use it alike.
package ociimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"runtime"
	"slices"
	"strings"
	"time"
)

// File is one entry of the image's filesystem.
type File struct {
	Path string      // absolute and clean: /usr/local/bin/subnetd
	Mode fs.FileMode // permission bits, with fs.ModeSymlink for a symlink
	Data []byte      // the content, or a symlink's target
}

// FromHost reads the host file at src as the image's file at dst, with its
// permission bits; a symlink stays a symlink.
func FromHost(src, dst string) (File, error) {
	st, err := os.Lstat(src)
	if err != nil {
		return File{}, err
	}
	if st.Mode()&fs.ModeSymlink != 0 {
		target, err := os.Readlink(src)
		return File{Path: dst, Mode: fs.ModeSymlink | 0o777, Data: []byte(target)}, err
	}
	if !st.Mode().IsRegular() {
		return File{}, fmt.Errorf("%s is not a regular file or a symlink", src)
	}
	data, err := os.ReadFile(src)
	return File{Path: dst, Mode: st.Mode().Perm(), Data: data}, err
}

// Image is what Write packs.
type Image struct {
	// Name is the reference containerd lists it as after an import:
	// registry/repository:tag, e.g. localhost/cnisuite/subnetd:v0.1.0.
	Name       string
	Files      []File
	Entrypoint []string
	Cmd        []string
	Env        []string
	Labels     map[string]string
	// Created is every file's time and the image's: a fixed time (the
	// commit's) for reproducible bytes; the zero time is the Unix epoch.
	Created time.Time
	Arch    string // GOARCH; "" is the running one's
}

// Media types of the OCI image spec.
const (
	mediaIndex    = "application/vnd.oci.image.index.v1+json"
	mediaManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaConfig   = "application/vnd.oci.image.config.v1+json"
	mediaLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"
)

// descriptor points at a blob.
type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int               `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

type blob struct {
	desc descriptor
	data []byte
}

func newBlob(mediaType string, data []byte) blob {
	return blob{desc: descriptor{MediaType: mediaType, Digest: digest(data), Size: len(data)}, data: data}
}

func digest(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Write writes img to w as an OCI image-layout tar and returns the digest
// of its manifest, which containerd shows as the image's digest.
func Write(w io.Writer, img Image) (string, error) {
	if err := img.validate(); err != nil {
		return "", err
	}
	if img.Created.IsZero() {
		img.Created = time.Unix(0, 0)
	}
	img.Created = img.Created.UTC().Truncate(time.Second)
	rootfs, err := layerTar(img.Files, img.Created)
	if err != nil {
		return "", err
	}
	layer, err := gzipped(rootfs)
	if err != nil {
		return "", err
	}
	configJSON, err := json.Marshal(img.config(digest(rootfs)))
	if err != nil {
		return "", err
	}
	cfg, lay := newBlob(mediaConfig, configJSON), newBlob(mediaLayer, layer)
	manifestJSON, err := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": mediaManifest,
		"config": cfg.desc, "layers": []descriptor{lay.desc}})
	if err != nil {
		return "", err
	}
	man := newBlob(mediaManifest, manifestJSON)
	ref := man.desc
	// containerd names the image by the first; the OCI spec's own is the tag.
	ref.Annotations = map[string]string{"io.containerd.image.name": img.Name,
		"org.opencontainers.image.ref.name": img.Name[strings.LastIndex(img.Name, ":")+1:]}
	index, err := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": mediaIndex, "manifests": []descriptor{ref}})
	if err != nil {
		return "", err
	}
	return man.desc.Digest, writeLayout(w, img.Created, index, []blob{cfg, lay, man})
}

func (img Image) validate() error {
	slash, colon := strings.LastIndex(img.Name, "/"), strings.LastIndex(img.Name, ":")
	if img.Name == "" || colon < slash || colon == len(img.Name)-1 || strings.ContainsAny(img.Name, " @") {
		return fmt.Errorf("image name %q: want registry/repository:tag", img.Name)
	}
	if len(img.Entrypoint) == 0 && len(img.Cmd) == 0 {
		return errors.New("image " + img.Name + ": no entrypoint and no command")
	}
	seen := map[string]bool{}
	for _, f := range img.Files {
		if !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path || f.Path == "/" {
			return fmt.Errorf("image %s: file path %q is not absolute and clean", img.Name, f.Path)
		}
		if seen[f.Path] {
			return fmt.Errorf("image %s: %s given twice", img.Name, f.Path)
		}
		seen[f.Path] = true
	}
	return nil
}

// config is the image's configuration blob.
func (img Image) config(diffID string) map[string]any {
	arch := img.Arch
	if arch == "" {
		arch = runtime.GOARCH
	}
	run := map[string]any{}
	for k, v := range map[string]any{"Entrypoint": img.Entrypoint, "Cmd": img.Cmd, "Env": img.Env} {
		if v := v.([]string); len(v) > 0 {
			run[k] = v
		}
	}
	if len(img.Labels) > 0 {
		run["Labels"] = img.Labels
	}
	created := img.Created.Format(time.RFC3339)
	return map[string]any{"created": created, "architecture": arch, "os": "linux", "config": run,
		"rootfs":  map[string]any{"type": "layers", "diff_ids": []string{diffID}},
		"history": []map[string]string{{"created": created, "created_by": "ociimage"}}}
}

// layerTar is the uncompressed layer: the files sorted by path, each
// preceded by its parent directories, owned by root, all at time at.
func layerTar(files []File, at time.Time) ([]byte, error) {
	files = slices.Clone(files)
	slices.SortFunc(files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	for _, f := range files {
		if err := parents(tw, dirs, path.Dir(f.Path), at); err != nil {
			return nil, err
		}
		if err := tw.WriteHeader(header(f, at)); err != nil {
			return nil, err
		}
		if f.Mode&fs.ModeSymlink == 0 {
			if _, err := tw.Write(f.Data); err != nil {
				return nil, err
			}
		}
	}
	err := tw.Close()
	return buf.Bytes(), err
}

// parents writes the directories above a file that are not written yet.
func parents(tw *tar.Writer, done map[string]bool, dir string, at time.Time) error {
	if dir == "/" || done[dir] {
		return nil
	}
	if err := parents(tw, done, path.Dir(dir), at); err != nil {
		return err
	}
	done[dir] = true
	return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir[1:] + "/", Mode: 0o755, ModTime: at, Format: tar.FormatPAX})
}

func header(f File, at time.Time) *tar.Header {
	h := &tar.Header{Name: f.Path[1:], Mode: int64(f.Mode.Perm()), ModTime: at, Format: tar.FormatPAX}
	if f.Mode&fs.ModeSymlink != 0 {
		h.Typeflag, h.Linkname = tar.TypeSymlink, string(f.Data)
	} else {
		h.Typeflag, h.Size = tar.TypeReg, int64(len(f.Data))
	}
	return h
}

// gzipped compresses without a name or time in the header, as gzip -n.
func gzipped(data []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(data); err != nil {
		return nil, err
	}
	err := zw.Close()
	return buf.Bytes(), err
}

// writeLayout writes the image layout: oci-layout, index.json and the blobs.
func writeLayout(w io.Writer, at time.Time, index []byte, blobs []blob) error {
	tw := tar.NewWriter(w)
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: at, Format: tar.FormatPAX}); err != nil {
			return err
		}
	}
	files := []File{{Path: "/oci-layout", Data: []byte(`{"imageLayoutVersion":"1.0.0"}`)}, {Path: "/index.json", Data: index}}
	for _, b := range blobs {
		files = append(files, File{Path: "/blobs/sha256/" + strings.TrimPrefix(b.desc.Digest, "sha256:"), Data: b.data})
	}
	for _, f := range files {
		f.Mode = 0o644
		if err := tw.WriteHeader(header(f, at)); err != nil {
			return err
		}
		if _, err := tw.Write(f.Data); err != nil {
			return err
		}
	}
	return tw.Close()
}
