package reliability

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pki is a CA and the files of certificates it signed, written in dir.
type pki struct {
	t    *testing.T
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newPKI(t *testing.T, dir, name string) *pki {
	t.Helper()
	p := &pki{t: t, dir: dir}
	p.cert, p.key = p.issue(name, &x509.Certificate{IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature})
	return p
}

// issue signs tmpl (self-signed when the CA does not exist yet) and writes
// name.crt and name.key.
func (p *pki) issue(name string, tmpl *x509.Certificate) (*x509.Certificate, *ecdsa.PrivateKey) {
	p.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		p.t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl.SerialNumber, tmpl.Subject = serial, pkix.Name{CommonName: name}
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	parent, signer := tmpl, key
	if p.cert != nil {
		parent, signer = p.cert, p.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		p.t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		p.t.Fatal(err)
	}
	p.write(name+".crt", "CERTIFICATE", der)
	p.write(name+".key", "EC PRIVATE KEY", keyDER)
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		p.t.Fatal(err)
	}
	return cert, key
}

func (p *pki) write(name, typ string, der []byte) {
	p.t.Helper()
	if err := os.WriteFile(filepath.Join(p.dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		p.t.Fatal(err)
	}
}

func (p *pki) path(name string) string { return filepath.Join(p.dir, name) }

// TestEtcdTLS: subnetd talks to an etcd that serves TLS with certificates
// made here: verifying the server with the CA alone, and presenting a client
// certificate when etcd demands one; it refuses a server its CA did not sign
// and is refused without a client certificate.
func TestEtcdTLS(t *testing.T) {
	t.Parallel() // waits on its own daemons, in namespaces of its own
	n := newDaemonNode(t)
	ca := newPKI(t, n.dir, "ca")
	ca.issue("server", &x509.Certificate{IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	ca.issue("client", &x509.Certificate{KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	other := newPKI(t, t.TempDir(), "other-ca")
	const url = "https://127.0.0.1:2379"
	serverTLS := []string{"--cert-file", ca.path("server.crt"), "--key-file", ca.path("server.key")}
	caOnly := []string{"--etcd-endpoints", url, "--etcd-cafile", ca.path("ca.crt")}
	withClient := append(caOnly, "--etcd-certfile", ca.path("client.crt"), "--etcd-keyfile", ca.path("client.key"))
	wrongCA := []string{"--etcd-endpoints", url, "--etcd-cafile", other.path("other-ca.crt")}

	etcd := n.startEtcd("etcd-tls", url, serverTLS...)
	n.expectReady("CA only", true, caOnly)
	n.expectReady("a CA that did not sign the server", false, wrongCA)
	etcd.stop()

	n.startEtcd("etcd-mtls", url, append(serverTLS, "--client-cert-auth", "--trusted-ca-file", ca.path("ca.crt"))...)
	n.expectReady("client certificate", true, withClient)
	n.expectReady("no client certificate", false, caOnly)
}

// expectReady starts subnetd with flags and checks that it gets ready (or,
// when it must not, that it stays unready for 5 s and says why), then stops it.
func (n *daemonNode) expectReady(what string, want bool, flags []string) {
	n.t.Helper()
	sd := n.startSubnetd("subnetd-"+strings.ReplaceAll(what, " ", "-"), flags...)
	defer sd.stop()
	if want {
		n.eventually("ready with "+what, 20*time.Second, func() bool { return n.ready("127.0.0.1:9090") })
		return
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if n.ready("127.0.0.1:9090") {
			n.t.Fatalf("subnetd got ready with %s:\n%s", what, sd.output())
		}
		time.Sleep(200 * time.Millisecond)
	}
	n.t.Logf("%s: %s", what, lastLine(sd.output()))
	if out := sd.output(); !strings.Contains(out, "tls: ") { // crypto/tls's errors name the cause
		n.t.Errorf("subnetd with %s does not say the TLS handshake failed:\n%s", what, out)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
