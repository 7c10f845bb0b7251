package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/cnisuite/cni/internal/ociimage"
)

// Image is an image archive that `ctr -n k8s.io images import` takes, and
// the name containerd then knows it by.
type Image struct {
	Name    string
	Archive string
}

// The test images, each one static program of test/images at its root,
// its entrypoint: the pause image that holds a pod's namespaces
// (containerd's sandbox_image) and a TCP echo server (PORT, default 8080).
var (
	PauseImage = Image{Name: "localhost/cnisuite/pause:test"}
	EchoImage  = Image{Name: "localhost/cnisuite/echo:test"}
)

// BuildTestImages builds the test images' programs and packs each into an
// image archive in dir; it returns PauseImage and EchoImage with their
// archives' paths. No registry is needed to run them.
func BuildTestImages(dir string) (pause, echo Image, err error) {
	pause, echo = PauseImage, EchoImage
	if err := buildTestImage(dir, "pause", &pause); err != nil {
		return pause, echo, err
	}
	return pause, echo, buildTestImage(dir, "echo", &echo)
}

func buildTestImage(dir, prog string, img *Image) error {
	bin := filepath.Join(dir, prog)
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "github.com/cnisuite/cni/test/images/"+prog)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("building the %s image's program: %w\n%s", prog, err, out)
	}
	f, err := ociimage.FromHost(bin, "/"+prog)
	if err != nil {
		return err
	}
	img.Archive = filepath.Join(dir, prog+".tar")
	out, err := os.Create(img.Archive)
	if err != nil {
		return err
	}
	_, err = ociimage.Write(out, ociimage.Image{Name: img.Name, Files: []ociimage.File{f}, Entrypoint: []string{"/" + prog}})
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}
