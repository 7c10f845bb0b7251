package netconf

import (
	"strings"
)

// ParseArgs reads CNI_ARGS ("K1=V1;K2=V2"). Keys a plugin does not know are
// kept and ignored, as runtimes always pass K8S_POD_NAME and friends.
func ParseArgs(s string) (map[string]string, error) {
	out := map[string]string{}
	if s == "" {
		return out, nil
	}
	for pair := range strings.SplitSeq(s, ";") {
		if pair == "" {
			continue
		}
		k, v, ok := strings.Cut(pair, "=")
		if !ok || k == "" {
			return nil, Errorf(CodeInvalidEnv, "CNI_ARGS: %q is not KEY=VALUE; pass pairs separated by ';'", pair)
		}
		out[k] = v
	}
	return out, nil
}
