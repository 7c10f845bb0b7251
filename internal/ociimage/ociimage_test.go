package ociimage_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"strings"
	"testing"
	"time"

	"github.com/cnisuite/cni/internal/ociimage"
)

var sample = ociimage.Image{
	Name: "localhost/cnisuite/sample:v1",
	Files: []ociimage.File{
		{Path: "/usr/local/bin/tool", Mode: 0o755, Data: []byte("#!binary")},
		{Path: "/etc/tool.conf", Mode: 0o644, Data: []byte("a=1\n")},
		{Path: "/usr/bin/alias", Mode: fs.ModeSymlink | 0o777, Data: []byte("../local/bin/tool")},
	},
	Entrypoint: []string{"/usr/local/bin/tool"},
	Env:        []string{"PATH=/usr/local/bin:/usr/bin"},
	Created:    time.Date(2026, 12, 6, 7, 0, 0, 0, time.UTC),
}

// entry is one member of a tar.
type entry struct {
	*tar.Header
	body []byte
}

// untar reads a tar's members by name.
func untar(t *testing.T, data []byte) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name] = entry{h, body}
	}
}

func sha(data []byte) string {
	s := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(s[:])
}

// blobOf returns the blob a descriptor points at, checking its digest and size.
func blobOf(t *testing.T, files map[string]entry, desc map[string]any) []byte {
	t.Helper()
	d := desc["digest"].(string)
	h, ok := files["blobs/sha256/"+strings.TrimPrefix(d, "sha256:")]
	if !ok {
		t.Fatalf("no blob %s in the archive", d)
	}
	if sha(h.body) != d || int(desc["size"].(float64)) != len(h.body) {
		t.Fatalf("blob %s: digest %s, size %d, descriptor %v", d, sha(h.body), len(h.body), desc)
	}
	return h.body
}

func decode(t *testing.T, data []byte) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestLayout follows the archive as an importer does: index.json names
// the image and points at the manifest, the manifest at the config and
// the layer, each by a digest and size that match; the config's diff_id is
// the uncompressed layer's; the layer holds the files with their modes and
// parent directories.
func TestLayout(t *testing.T) {
	var buf bytes.Buffer
	manifestDigest, err := ociimage.Write(&buf, sample)
	if err != nil {
		t.Fatal(err)
	}
	files := untar(t, buf.Bytes())
	if got := string(files["oci-layout"].body); got != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout: %s", got)
	}
	index := decode(t, files["index.json"].body)
	ref := index["manifests"].([]any)[0].(map[string]any)
	ann := ref["annotations"].(map[string]any)
	if ann["io.containerd.image.name"] != sample.Name || ann["org.opencontainers.image.ref.name"] != "v1" || ref["digest"] != manifestDigest {
		t.Errorf("index entry %v, manifest digest %s", ref, manifestDigest)
	}
	manifest := decode(t, blobOf(t, files, ref))
	config := decode(t, blobOf(t, files, manifest["config"].(map[string]any)))
	layerGz := blobOf(t, files, manifest["layers"].([]any)[0].(map[string]any))
	zr, err := gzip.NewReader(bytes.NewReader(layerGz))
	if err != nil {
		t.Fatal(err)
	}
	layer, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if diffIDs := config["rootfs"].(map[string]any)["diff_ids"].([]any); len(diffIDs) != 1 || diffIDs[0] != sha(layer) {
		t.Errorf("diff_ids %v, layer %s", diffIDs, sha(layer))
	}
	if ep := config["config"].(map[string]any)["Entrypoint"].([]any); len(ep) != 1 || ep[0] != "/usr/local/bin/tool" || config["os"] != "linux" {
		t.Errorf("config %v", config)
	}
	root := untar(t, layer)
	for name, want := range map[string]int64{"usr/": 0o755, "usr/local/": 0o755, "usr/local/bin/": 0o755, "usr/local/bin/tool": 0o755, "etc/tool.conf": 0o644} {
		if h, ok := root[name]; !ok || h.Mode != want || h.Uid != 0 || !h.ModTime.Equal(sample.Created) {
			t.Errorf("layer entry %s: %+v", name, h.Header)
		}
	}
	if h, ok := root["usr/bin/alias"]; !ok || h.Typeflag != tar.TypeSymlink || h.Linkname != "../local/bin/tool" {
		t.Errorf("symlink: %+v", h.Header)
	}
	if string(root["usr/local/bin/tool"].body) != "#!binary" {
		t.Error("file content changed")
	}
}

// TestReproducible: the same image gives the same bytes, whatever the
// order of its files.
func TestReproducible(t *testing.T) {
	var a, b bytes.Buffer
	if _, err := ociimage.Write(&a, sample); err != nil {
		t.Fatal(err)
	}
	shuffled := sample
	shuffled.Files = []ociimage.File{sample.Files[2], sample.Files[0], sample.Files[1]}
	if _, err := ociimage.Write(&b, shuffled); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("two writes of one image differ")
	}
}

func TestRefused(t *testing.T) {
	for name, mutate := range map[string]func(*ociimage.Image){
		"no tag":        func(i *ociimage.Image) { i.Name = "localhost/cnisuite/sample" },
		"port, no tag":  func(i *ociimage.Image) { i.Name = "localhost:5000/sample" },
		"no command":    func(i *ociimage.Image) { i.Entrypoint = nil },
		"relative path": func(i *ociimage.Image) { i.Files = []ociimage.File{{Path: "etc/x"}} },
		"unclean path":  func(i *ociimage.Image) { i.Files = []ociimage.File{{Path: "/etc/../x"}} },
		"twice": func(i *ociimage.Image) {
			i.Files = []ociimage.File{{Path: "/x", Mode: 0o644}, {Path: "/x", Mode: 0o644}}
		},
	} {
		img := sample
		mutate(&img)
		if _, err := ociimage.Write(io.Discard, img); err == nil {
			t.Errorf("%s: written", name)
		}
	}
}
