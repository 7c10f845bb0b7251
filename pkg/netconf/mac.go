package netconf

import "net"

// MACSource is one place a container MAC may come from, named as the user
// wrote it. FromEnv marks CNI_ARGS, whose bad values are code 4, not 7.
type MACSource struct {
	Name    string
	Value   string
	FromEnv bool
}

// PickMAC returns the MAC of the first source, in precedence order, that
// sets one, or nil when none does. A value that is not a unicast, non-zero
// Ethernet address is an error naming its source.
func PickMAC(sources ...MACSource) (net.HardwareAddr, error) {
	for _, s := range sources {
		if s.Value == "" {
			continue
		}
		mac, err := net.ParseMAC(s.Value)
		if err != nil || len(mac) != 6 || mac[0]&1 == 1 || isZeroMAC(mac) {
			code := CodeInvalidConfig
			if s.FromEnv {
				code = CodeInvalidEnv
			}
			return nil, Errorf(code, "%s %q is not a unicast Ethernet MAC address (like 02:42:ac:11:00:02)", s.Name, s.Value)
		}
		return mac, nil
	}
	return nil, nil
}

func isZeroMAC(mac net.HardwareAddr) bool {
	for _, b := range mac {
		if b != 0 {
			return false
		}
	}
	return true
}
