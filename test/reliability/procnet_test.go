package reliability

import (
	"encoding/hex"
	"net/netip"
	"strconv"
	"strings"
	"testing"
)

// decodeProcAddr turns /proc/net/tcp's "0100007F:2382" (the address in the
// kernel's byte order, 32-bit words, and the port in hex) into "127.0.0.1:9090".
func decodeProcAddr(s string) string {
	hexAddr, hexPort, ok := strings.Cut(s, ":")
	raw, err := hex.DecodeString(hexAddr)
	port, perr := strconv.ParseUint(hexPort, 16, 16)
	if !ok || err != nil || perr != nil || (len(raw) != 4 && len(raw) != 16) {
		return "?" + s
	}
	for i := 0; i < len(raw); i += 4 { // each 32-bit word is little-endian
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	addr, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(addr.Unmap(), uint16(port)).String()
}

func TestDecodeProcAddr(t *testing.T) {
	cases := map[string]string{
		"0100007F:2382":                         "127.0.0.1:9090",
		"0A4CA8C0:0050":                         "192.168.76.10:80",
		"00000000:0947":                         "0.0.0.0:2375",
		"00000000000000000000000000000000:1F90": "[::]:8080",
		"0000000000000000FFFF00000100007F:2382": "127.0.0.1:9090",
		"zz:1":                                  "?zz:1",
	}
	for in, want := range cases {
		if got := decodeProcAddr(in); got != want {
			t.Errorf("decodeProcAddr(%q) = %q, want %q", in, got, want)
		}
	}
}
