package migrator

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

// testPKI writes a CA and a certificate for 127.0.0.1 signed by it, and
// returns the files.
func testPKI(t *testing.T, dir, name string) TLSFiles {
	t.Helper()
	write := func(file, typ string, der []byte) string {
		path := filepath.Join(dir, name+"-"+file)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	caCert, _ := x509.ParseCertificate(caDER)
	der, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	return TLSFiles{Cert: write("cert.pem", "CERTIFICATE", der), Key: write("key.pem", "EC PRIVATE KEY", keyDER),
		CA: write("ca.pem", "CERTIFICATE", caDER)}
}

func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	good := testPKI(t, dir, "site")
	rogue := testPKI(t, dir, "rogue")
	server, err := good.Config(true)
	if err != nil {
		t.Fatal(err)
	}
	client, err := good.Config(false)
	if err != nil {
		t.Fatal(err)
	}

	load := lightLoad
	load.Memory = 4 << 20
	src := newMemGuest(t, load, true)
	dst := newMemGuest(t, load, false)
	d := listenDestination(t, dst, ReceiveConfig{TLS: server})
	m, err := Outgoing(src, d.uri, Config{TLS: client})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Wait(); err != nil {
		t.Fatalf("migration over mutual TLS: %v", err)
	}
	<-d.done
	if d.err != nil {
		t.Fatal(d.err)
	}

	// A source whose certificate another CA signed is turned away, and
	// keeps its guest.
	rogueClient, err := TLSFiles{Cert: rogue.Cert, Key: rogue.Key, CA: good.CA}.Config(false)
	if err != nil {
		t.Fatal(err)
	}
	src2 := newMemGuest(t, load, true)
	dst2 := newMemGuest(t, load, false)
	d2 := listenDestination(t, dst2, ReceiveConfig{TLS: server})
	m2, err := Outgoing(src2, d2.uri, Config{TLS: rogueClient})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m2.Wait(); err == nil {
		t.Fatal("a source with a certificate from another CA migrated")
	} else {
		t.Logf("rogue source: %v", err)
	}
	<-d2.done
	if d2.err == nil || !strings.Contains(d2.err.Error(), "certificate") {
		t.Errorf("destination: %v", d2.err)
	}
	if ok, st := src2.Running(); !ok {
		t.Fatalf("rogue source is %s", st)
	}

	// A plain source meeting a TLS destination is told TLS may be why.
	src3 := newMemGuest(t, load, true)
	dst3 := newMemGuest(t, load, false)
	d3 := listenDestination(t, dst3, ReceiveConfig{TLS: server})
	m3, err := Outgoing(src3, d3.uri, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m3.Wait(); err == nil || !strings.Contains(err.Error(), "requires TLS") {
		t.Errorf("plain source into a TLS destination: %v, want a hint at TLS", err)
	}
	<-d3.done
	if ok, st := src3.Running(); !ok {
		t.Fatalf("plain source is %s", st)
	}

	if _, err := (TLSFiles{Cert: good.Cert}).Config(false); err == nil {
		t.Error("TLS with only a certificate was accepted")
	}
}
