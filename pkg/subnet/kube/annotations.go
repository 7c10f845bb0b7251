package kube

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/subnet"
)

// DefaultPrefix is flanneld's default --kube-annotation-prefix.
const DefaultPrefix = "flannel.alpha.coreos.com"

// ErrBadPrefix marks an annotation prefix flanneld would refuse.
var ErrBadPrefix = errors.New("bad annotation prefix")

// prefixForm is flanneld's rule for the completed prefix: a DNS name, a
// slash, and optionally a name ending in a hyphen. Anchored, unlike
// flanneld's, since the API server refuses keys that only end like this.
var prefixForm = regexp.MustCompile(`^(?:[a-z0-9_-]+\.)+[a-z0-9_-]+/(?:[a-z0-9_-]+-)?$`)

// annotations are the names of flanneld's Node annotations under one prefix.
type annotations struct {
	prefix      string
	managed     string // "true" on every node whose daemon publishes its lease
	backendType string
	// Per family:
	data      [2]string // backend-data, backend-v6-data
	publicIP  [2]string // public-ip, public-ipv6
	overwrite [2]string // public-ip-overwrite, public-ipv6-overwrite: set by an operator
}

// CheckPrefix reports whether flanneld would accept prefix as its
// --kube-annotation-prefix.
func CheckPrefix(prefix string) error {
	_, err := newAnnotations(prefix)
	return err
}

// newAnnotations completes prefix as flanneld does ("/" appended when it
// has no slash, "-" when it has one but ends in neither) and names the
// annotations under it.
func newAnnotations(prefix string) (annotations, error) {
	switch n := strings.Count(prefix, "/"); {
	case n > 1:
		return annotations{}, fmt.Errorf("%w %q: it may contain at most one slash", ErrBadPrefix, prefix)
	case n == 0:
		prefix += "/"
	case !strings.HasSuffix(prefix, "/") && !strings.HasSuffix(prefix, "-"):
		prefix += "-"
	}
	if !prefixForm.MatchString(prefix) {
		return annotations{}, fmt.Errorf("%w %q: want a lowercase DNS name, optionally followed by /name, e.g. %s", ErrBadPrefix, prefix, DefaultPrefix)
	}
	return annotations{
		prefix:      prefix,
		managed:     prefix + "kube-subnet-manager",
		backendType: prefix + "backend-type",
		data:        [2]string{prefix + "backend-data", prefix + "backend-v6-data"},
		publicIP:    [2]string{prefix + "public-ip", prefix + "public-ipv6"},
		overwrite:   [2]string{prefix + "public-ip-overwrite", prefix + "public-ipv6-overwrite"},
	}, nil
}

// publish is the annotations a node writes for its lease attributes, as
// flanneld writes them: backend data "null" when the backend has none.
func (a annotations) publish(attrs subnet.Attrs, c subnet.Config) map[string]string {
	m := map[string]string{a.managed: "true", a.backendType: attrs.BackendType}
	for _, f := range c.Families() {
		data := string(*attrs.BackendDataOf(f))
		if data == "" {
			data = "null"
		}
		m[a.data[f]] = data
		m[a.publicIP[f]] = attrs.PublicIPOf(f).String()
	}
	return m
}

// attrs reads the lease attributes a node published, with its name as
// NodeID; an error names the annotation that is missing or malformed.
func (a annotations) attrs(name string, ann map[string]string, c subnet.Config) (subnet.Attrs, error) {
	out := subnet.Attrs{BackendType: ann[a.backendType], NodeID: name}
	if out.BackendType == "" {
		return subnet.Attrs{}, fmt.Errorf("annotation %s is missing", a.backendType)
	}
	for _, f := range c.Families() {
		ip, err := netip.ParseAddr(ann[a.publicIP[f]])
		if err != nil || family.Of(ip) != f || ip.Zone() != "" {
			return subnet.Attrs{}, fmt.Errorf("annotation %s %q is not an %s address", a.publicIP[f], ann[a.publicIP[f]], f)
		}
		*out.PublicIPOf(f) = ip
		data, ok := ann[a.data[f]]
		if ok && !json.Valid([]byte(data)) {
			return subnet.Attrs{}, fmt.Errorf("annotation %s %q is not JSON", a.data[f], data)
		}
		*out.BackendDataOf(f) = json.RawMessage(data)
	}
	return out, nil
}

// overwritten applies the node's public-ip(v6)-overwrite annotations, with
// which an operator publishes another address than the one the node found
// (a NAT's). One that is not an address of its family is not applied, and
// returned as an error.
func (a annotations) overwritten(attrs subnet.Attrs, ann map[string]string, c subnet.Config) (subnet.Attrs, error) {
	var errs []error
	for _, f := range c.Families() {
		s := ann[a.overwrite[f]]
		if s == "" {
			continue
		}
		ip, err := netip.ParseAddr(s)
		if err != nil || family.Of(ip) != f || ip.Zone() != "" {
			errs = append(errs, fmt.Errorf("annotation %s %q is not an %s address; publishing the node's own, fix or remove the annotation", a.overwrite[f], s, f))
			continue
		}
		*attrs.PublicIPOf(f) = ip
	}
	return attrs, errors.Join(errs...)
}
