package netconf

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

// Base holds the keys every plugin configuration shares. Plugins embed it.
type Base struct {
	CNIVersion    string          `json:"cniVersion"`
	Name          string          `json:"name"`
	Type          string          `json:"type"`
	Capabilities  map[string]bool `json:"capabilities,omitempty"`
	IPAM          IPAM            `json:"ipam,omitempty"`
	DNS           types.DNS       `json:"dns,omitempty"`
	RawPrevResult json.RawMessage `json:"prevResult,omitempty"`
	LogFile       string          `json:"logFile,omitempty"`
	LogLevel      string          `json:"logLevel,omitempty"`

	// GC attachment lists; libcni sends one of the two names depending on its version.
	ValidAttachments []Attachment `json:"cni.dev/valid-attachments,omitempty"`
	Attachments      []Attachment `json:"cni.dev/attachments,omitempty"`
}

// IPAM names the IPAM plugin; its own keys are parsed by that plugin.
type IPAM struct {
	Type string `json:"type,omitempty"`
}

// Attachment is one (containerID, ifname) pair of a GC call.
type Attachment struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifname"`
}

// MaxConfSize bounds what a plugin accepts on stdin; real configurations are a few KiB.
const MaxConfSize = 1 << 20

// ReadConf reads a configuration from r, the plugin's stdin: at most
// MaxConfSize bytes, and a longer one is refused (code 6) once MaxConfSize+1
// bytes are read, without reading or parsing the rest.
func ReadConf(r io.Reader) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxConfSize+1))
	if err != nil {
		return nil, Errorf(CodeIO, "reading the network configuration from stdin: %w", err)
	}
	if len(data) > MaxConfSize {
		return nil, tooLarge()
	}
	return data, nil
}

func tooLarge() *Error {
	return Errorf(CodeDecoding, "network configuration is over the %d bytes accepted (real ones are a few KiB); check what the runtime passes on stdin", MaxConfSize)
}

// Load decodes data into conf (a struct embedding Base, or Base itself) and
// checks the shared keys (Validate). Decoding problems are code 6, bad values
// code 7.
func Load(data []byte, conf interface{ Common() *Base }) error {
	if len(data) > MaxConfSize {
		return tooLarge()
	}
	if err := json.Unmarshal(data, conf); err != nil {
		return decodeError(err)
	}
	return conf.Common().Validate()
}

func decodeError(err error) *Error {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		return Errorf(CodeDecoding, "network configuration: key %q must be a JSON %s, not %s", typeErr.Field, typeErr.Type, typeErr.Value)
	}
	return Errorf(CodeDecoding, "network configuration is not valid JSON: %w", err)
}

// Validate checks the keys of Base that every plugin needs.
func (b *Base) Validate() error {
	if b.Name == "" {
		return Invalid("network configuration has no \"name\"; set it to the network's name (e.g. \"cbr0\")")
	}
	if b.Type == "" {
		return Invalid("network configuration has no \"type\"; set it to the plugin's binary name")
	}
	if b.CNIVersion == "" {
		b.CNIVersion = "0.1.0" // what the spec says an absent cniVersion means
	}
	return nil
}

// Common returns the keys every plugin shares. A configuration embedding
// Base has the method too, so code that serves every plugin (containerif)
// takes any of them.
func (b *Base) Common() *Base { return b }

// ValidList returns the attachments a GC call says are still in use; whichever
// of the two keys libcni sent. Both absent means none is valid.
func (b *Base) ValidList() []Attachment {
	if b.ValidAttachments != nil {
		return b.ValidAttachments
	}
	return b.Attachments
}

// PrevResult converts the prevResult, if any, to the current result type.
// It returns nil and no error when the configuration has none.
func (b *Base) PrevResult() (*current.Result, error) {
	if len(b.RawPrevResult) == 0 || string(b.RawPrevResult) == "null" {
		return nil, nil
	}
	res, err := version.NewResult(b.CNIVersion, b.RawPrevResult)
	if err != nil {
		return nil, Errorf(CodeDecoding, "prevResult cannot be read as a version %s result: %w", b.CNIVersion, err)
	}
	cur, err := current.NewResultFromResult(res)
	if err != nil {
		return nil, Errorf(CodeDecoding, "prevResult cannot be converted to the current result format: %w", err)
	}
	return cur, nil
}

// ChainedPrevResult is PrevResult for a plugin that works on the result of
// the plugins before it in a conflist: its absence is code 7, saying what
// the plugin (Type) must be chained after, e.g. "the plugin that creates the
// interface (e.g. bridge)".
func (b *Base) ChainedPrevResult(after string) (*current.Result, error) {
	prev, err := b.PrevResult()
	if err == nil && prev == nil {
		err = Invalid("%s must be chained after %s: the configuration has no prevResult", b.Type, after)
	}
	return prev, err
}

// CheckPrevResult is PrevResult for CHECK, where the spec makes it mandatory.
func (b *Base) CheckPrevResult() (*current.Result, error) {
	prev, err := b.PrevResult()
	if err == nil && prev == nil {
		err = Invalid("CHECK needs the prevResult of ADD in the configuration; runtimes pass it from their cache")
	}
	return prev, err
}

// Required reports a missing key with what to put there.
func Required(key, hint string) error {
	return Invalid("%s is required: %s", key, hint)
}

// String formats an attachment for messages and logs.
func (a Attachment) String() string { return fmt.Sprintf("%s/%s", a.ContainerID, a.IfName) }
