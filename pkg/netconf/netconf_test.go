package netconf

import (
	"errors"
	"io/fs"
	"strings"
	"testing"
	"testing/iotest"
)

func TestParseArgs(t *testing.T) {
	tests := []struct {
		in      string
		want    map[string]string
		wantErr bool
	}{
		{in: "", want: map[string]string{}},
		{in: "IP=10.0.0.5", want: map[string]string{"IP": "10.0.0.5"}},
		{in: "IgnoreUnknown=1;K8S_POD_NAME=web;IP=10.0.0.5,fd00::5", want: map[string]string{"IgnoreUnknown": "1", "K8S_POD_NAME": "web", "IP": "10.0.0.5,fd00::5"}},
		{in: "A=;B=x=y", want: map[string]string{"A": "", "B": "x=y"}},
		{in: "A=1;;", want: map[string]string{"A": "1"}},
		{in: "novalue", wantErr: true},
		{in: "=v", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseArgs(tt.in)
		if tt.wantErr {
			var ne *Error
			if !errors.As(err, &ne) || ne.Code != CodeInvalidEnv {
				t.Errorf("ParseArgs(%q) err = %v, want code %d", tt.in, err, CodeInvalidEnv)
			}
			continue
		}
		if err != nil || len(got) != len(tt.want) {
			t.Fatalf("ParseArgs(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
		for k, v := range tt.want {
			if got[k] != v {
				t.Errorf("ParseArgs(%q)[%s] = %q, want %q", tt.in, k, got[k], v)
			}
		}
	}
}

// endless is stdin that never ends, counting what was read of it.
type endless struct{ read int64 }

func (e *endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = ' '
	}
	e.read += int64(len(p))
	return len(p), nil
}

// TestReadConf: up to MaxConfSize bytes are returned whole; past that, code
// 6, with no more than MaxConfSize+1 bytes read of an endless stdin.
func TestReadConf(t *testing.T) {
	for _, n := range []int{0, 100, MaxConfSize} {
		in := strings.Repeat(" ", n)
		if got, err := ReadConf(strings.NewReader(in)); err != nil || string(got) != in {
			t.Errorf("%d bytes: %d bytes, %v", n, len(got), err)
		}
	}
	var ne *Error
	if _, err := ReadConf(strings.NewReader(strings.Repeat(" ", MaxConfSize+1))); !errors.As(err, &ne) || ne.Code != CodeDecoding {
		t.Errorf("one byte over: %v, want code 6", err)
	}
	stdin := &endless{}
	_, err := ReadConf(stdin)
	if !errors.As(err, &ne) || ne.Code != CodeDecoding || !strings.Contains(err.Error(), "1048576 bytes") {
		t.Errorf("endless stdin: %v, want code 6 naming the limit", err)
	}
	if stdin.read > MaxConfSize+1 {
		t.Errorf("read %d bytes of an endless stdin, want at most %d", stdin.read, MaxConfSize+1)
	}
	if _, err := ReadConf(iotest.ErrReader(fs.ErrClosed)); !errors.As(err, &ne) || ne.Code != CodeIO {
		t.Errorf("failing stdin: %v, want code 5", err)
	}
}

func TestLoadAndValidate(t *testing.T) {
	tests := []struct {
		name, in string
		code     uint // 0: no error
	}{
		{"ok", `{"cniVersion":"1.0.0","name":"cbr0","type":"bridge"}`, 0},
		{"no version means 0.1.0", `{"name":"cbr0","type":"bridge"}`, 0},
		{"not json", `{"name":`, CodeDecoding},
		{"wrong type", `{"name":5,"type":"bridge"}`, CodeDecoding},
		{"no name", `{"cniVersion":"1.0.0","type":"bridge"}`, CodeInvalidConfig},
		{"no type", `{"cniVersion":"1.0.0","name":"cbr0"}`, CodeInvalidConfig},
		{"huge", `{"name":"` + strings.Repeat("a", MaxConfSize) + `"}`, CodeDecoding},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b Base
			err := Load([]byte(tt.in), &b)
			if err == nil {
				err = b.Validate()
			}
			if tt.code == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			var ne *Error
			if !errors.As(err, &ne) || ne.Code != tt.code {
				t.Fatalf("err = %v, want code %d", err, tt.code)
			}
		})
	}
}

func TestValidList(t *testing.T) {
	for _, key := range []string{"cni.dev/valid-attachments", "cni.dev/attachments"} {
		in := `{"name":"n","type":"t","` + key + `":[{"containerID":"c1","ifname":"eth0"}]}`
		var b Base
		if err := Load([]byte(in), &b); err != nil {
			t.Fatal(err)
		}
		got := b.ValidList()
		if len(got) != 1 || got[0] != (Attachment{"c1", "eth0"}) {
			t.Errorf("%s: ValidList = %v", key, got)
		}
	}
}

func TestPrevResultConvertsOldVersions(t *testing.T) {
	in := `{"cniVersion":"0.3.1","name":"n","type":"t","prevResult":{"cniVersion":"0.3.1",
		"interfaces":[{"name":"eth0","sandbox":"/run/netns/x"}],
		"ips":[{"version":"4","address":"10.1.0.5/24","gateway":"10.1.0.1","interface":0}]}}`
	var b Base
	if err := Load([]byte(in), &b); err != nil {
		t.Fatal(err)
	}
	res, err := b.PrevResult()
	if err != nil {
		t.Fatal(err)
	}
	if len(res.IPs) != 1 || res.IPs[0].Address.String() != "10.1.0.5/24" || *res.IPs[0].Interface != 0 {
		t.Fatalf("prevResult = %+v", res)
	}
	none := Base{CNIVersion: "1.0.0"}
	if res, err := none.PrevResult(); res != nil || err != nil {
		t.Fatalf("no prevResult: got %v, %v", res, err)
	}
}

func TestErrorfKeepsCause(t *testing.T) {
	e := Errorf(CodeIO, "writing %s: %w", "/x", fs.ErrPermission)
	if !errors.Is(e, fs.ErrPermission) || e.Error() != "writing /x: permission denied" || e.Msg != "writing /x" {
		t.Fatalf("Errorf: %q msg %q", e.Error(), e.Msg)
	}
}

func FuzzParseArgs(f *testing.F) {
	f.Add("IgnoreUnknown=1;IP=10.0.0.5")
	f.Add("a;b=;=c")
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseArgs(s)
		if err == nil && m == nil {
			t.Fatal("nil map without error")
		}
	})
}

func FuzzLoad(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"cbr0","type":"bridge","prevResult":{"ips":[]}}`))
	f.Add([]byte(`{"cni.dev/valid-attachments":[{"containerID":1}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var b Base
		if Load(data, &b) != nil || b.Validate() != nil {
			return
		}
		_, _ = b.PrevResult()
		_ = b.ValidList()
	})
}

func TestPickMAC(t *testing.T) {
	tests := []struct {
		name    string
		sources []MACSource
		want    string
		code    uint
	}{
		{"none", []MACSource{{Name: "a"}, {Name: "b"}}, "", 0},
		{"first set wins", []MACSource{{Name: "a"}, {Name: "b", Value: "02:00:00:00:00:02"}, {Name: "c", Value: "02:00:00:00:00:03"}}, "02:00:00:00:00:02", 0},
		{"multicast", []MACSource{{Name: "a", Value: "01:00:00:00:00:01"}}, "", CodeInvalidConfig},
		{"zero", []MACSource{{Name: "a", Value: "00:00:00:00:00:00"}}, "", CodeInvalidConfig},
		{"bad from env", []MACSource{{Name: "CNI_ARGS MAC", Value: "nope", FromEnv: true}}, "", CodeInvalidEnv},
	}
	for _, tt := range tests {
		got, err := PickMAC(tt.sources...)
		var ne *Error
		switch {
		case tt.code != 0 && (!errors.As(err, &ne) || ne.Code != tt.code):
			t.Errorf("%s: err %v, want code %d", tt.name, err, tt.code)
		case tt.code == 0 && (err != nil || got.String() != tt.want && !(got == nil && tt.want == "")):
			t.Errorf("%s: got %v, %v; want %q", tt.name, got, err, tt.want)
		}
	}
}

func TestChainedPrevResult(t *testing.T) {
	var b Base
	if err := Load([]byte(`{"cniVersion":"1.1.0","name":"n","type":"tuning"}`), &b); err != nil {
		t.Fatal(err)
	}
	_, err := b.ChainedPrevResult("the plugin that creates the interface")
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeInvalidConfig || !strings.Contains(e.Error(), "tuning must be chained after the plugin that creates the interface") {
		t.Errorf("without a prevResult: %v", err)
	}
	if err := Load([]byte(`{"cniVersion":"1.1.0","name":"n","type":"tuning","prevResult":{"cniVersion":"1.1.0"}}`), &b); err != nil {
		t.Fatal(err)
	}
	if prev, err := b.ChainedPrevResult("x"); prev == nil || err != nil {
		t.Errorf("with a prevResult: %v, %v", prev, err)
	}
}
