package migrator

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pagecast/pagecast/internal/testutil"
)

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
	tlsRefused(t, rogueClient, server, "the destination refused this side's certificate", "the source's certificate is not signed by the CA this side trusts")

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

	// A source that trusts another CA than the one that signed the
	// destination's certificate says so, and keeps its guest.
	wrongCA, err := TLSFiles{Cert: good.Cert, Key: good.Key, CA: rogue.CA}.Config(false)
	if err != nil {
		t.Fatal(err)
	}
	tlsRefused(t, wrongCA, server, "the destination's certificate is not signed by the CA this side trusts", "the source refused this side's certificate")

	if _, err := (TLSFiles{Cert: good.Cert}).Config(false); err == nil {
		t.Error("TLS with only a certificate was accepted")
	}
}

// TestTLSSaysWhy: what each end says where TLS fails other than by the CA
// (found by a security walk, which had every refusal said to want another
// CA, a TLS source into a plain destination said as a record of 80 MB,
// and a destination whose own certificate had expired start unsaid).
func TestTLSSaysWhy(t *testing.T) {
	dir := t.TempDir()
	good := testPKI(t, dir, "site")
	client, err := good.Config(false)
	if err != nil {
		t.Fatal(err)
	}
	// A TLS source into a plain destination: each end says which is which.
	tlsRefused(t, client, nil, "the destination does not speak TLS", "a TLS handshake, not pagecast's plain stream")

	// A source whose certificate is not for client use: refused, and told
	// what may be wrong besides the CA.
	c, k, ca := testutil.PKIWith(t, dir, "usage", func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning} })
	codeSigning, err := TLSFiles{Cert: c, Key: k, CA: good.CA}.Config(false)
	if err != nil {
		t.Fatal(err)
	}
	server, err := TLSFiles{Cert: good.Cert, Key: good.Key, CA: ca}.Config(true)
	if err != nil {
		t.Fatal(err)
	}
	tlsRefused(t, codeSigning, server, "within its dates and for client use", "the source's certificate is not for client use: its extendedKeyUsage lacks clientAuth")
	// A destination whose certificate is for client use only: the
	// source says so, where both ends said "expired, not yet valid or
	// not for this use" (walk 160).
	c, k, ca = testutil.PKIWith(t, dir, "clientonly", func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth} })
	clientOnly, err := TLSFiles{Cert: c, Key: k, CA: good.CA}.Config(true)
	if err != nil {
		t.Fatal(err)
	}
	trustsIt, err := TLSFiles{Cert: good.Cert, Key: good.Key, CA: ca}.Config(false)
	if err != nil {
		t.Fatal(err)
	}
	tlsRefused(t, trustsIt, clientOnly, "the destination's certificate is not for server use: its extendedKeyUsage lacks serverAuth", "")

	// An HTTP request at a TLS destination is named as one (walk 68).
	if err := tlsHint(tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake", RecordHeader: [5]byte{'G', 'E', 'T', ' ', '/'}}, "source"); !strings.Contains(err.Error(), "an HTTP request, not a pagecast migration") {
		t.Errorf("an HTTP request at a TLS destination: %v", err)
	}

	// The other end's alerts, each said for what it is.
	for alert, want := range map[string]string{
		"tls: expired certificate":           "it has expired, or is not valid yet, by the destination's clock",
		"tls: unknown certificate authority": "it must be signed by the CA the destination trusts",
		"tls: certificate required":          "this side sent none",
		"tls: bad certificate":               "within its dates and for client use",
		"tls: unsupported certificate":       "its key's type is one the destination does not take",
	} {
		err := tlsHint(&net.OpError{Op: "remote error", Err: errors.New(alert)}, "destination")
		if !strings.Contains(err.Error(), want) {
			t.Errorf("alert %q: %v, want %q", alert, err, want)
		}
	}

	// This end's own certificate out of its dates is refused at once,
	// and a key others may read is warned of.
	c, k, ca = testutil.PKIWith(t, dir, "expired", func(c *x509.Certificate) { c.NotAfter = time.Now().Add(-time.Minute) })
	if _, err := (TLSFiles{Cert: c, Key: k, CA: ca}).Config(true); err == nil || !strings.Contains(err.Error(), "--tls-cert "+c+" expired on") {
		t.Errorf("an expired certificate: %v", err)
	}
	var logged strings.Builder
	defer slog.SetDefault(slog.Default())
	slog.SetDefault(slog.New(slog.NewTextHandler(&logged, nil)))
	c, k, ca = testutil.PKIWith(t, dir, "early", func(c *x509.Certificate) { c.NotBefore = time.Now().Add(time.Minute) })
	if _, err := (TLSFiles{Cert: c, Key: k, CA: ca}).Config(true); err != nil || !strings.Contains(logged.String(), "not valid yet by this host's clock") {
		t.Errorf("a certificate valid in a minute: %v, logged %q", err, logged.String())
	}
	for mode, warned := range map[os.FileMode]bool{0o640: false, 0o644: true} {
		logged.Reset()
		if err := os.Chmod(good.Key, mode); err != nil {
			t.Fatal(err)
		}
		if _, err := good.Config(true); err != nil || strings.Contains(logged.String(), "chmod o-rwx") != warned {
			t.Errorf("a key of mode %04o: %v, logged %q", mode, err, logged.String())
		}
	}
	// Both ends loaded at once (vm run: a source and a destination) say
	// it once (walk 68: twice).
	if err := os.Chmod(good.Key, 0o644); err != nil {
		t.Fatal(err)
	}
	logged.Reset()
	if client, server, err := good.Configs(); err != nil || client == nil || server == nil || strings.Count(logged.String(), "chmod o-rwx") != 1 {
		t.Errorf("both ends of a key of mode 0644: %v, logged %q", err, logged.String())
	}
}

// tlsRefused migrates a 4 MiB guest from a source of TLS configuration
// client to a destination of server (nil: plain TCP), which must fail: the
// source's error holds wantSrc, the destination's wantDst ("" not
// checked), and the source keeps its guest running.
func tlsRefused(t *testing.T, client, server *tls.Config, wantSrc, wantDst string) {
	t.Helper()
	load := lightLoad
	load.Memory = 4 << 20
	src := newMemGuest(t, load, true)
	d := listenDestination(t, newMemGuest(t, load, false), ReceiveConfig{TLS: server})
	m, err := Outgoing(src, d.uri, Config{TLS: client})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Wait(); err == nil || !strings.Contains(err.Error(), wantSrc) {
		t.Errorf("source: %v, want %q", err, wantSrc)
	}
	<-d.done
	if wantDst != "" && (d.err == nil || !strings.Contains(d.err.Error(), wantDst)) {
		t.Errorf("destination: %v, want %q", d.err, wantDst)
	}
	if ok, st := src.Running(); !ok {
		t.Fatalf("source is %s after a refused migration", st)
	}
}

// testPKI writes a CA and a certificate for 127.0.0.1 signed by it.
func testPKI(t *testing.T, dir, name string) TLSFiles {
	cert, key, ca := testutil.PKI(t, dir, name)
	return TLSFiles{Cert: cert, Key: key, CA: ca}
}

// TestQuietPeer: a connection that closes before it says anything (a port
// probe), plain or under TLS, is a quiet peer, not a refused source.
func TestQuietPeer(t *testing.T) {
	cert, key, ca := testutil.PKI(t, t.TempDir(), "site")
	server, err := TLSFiles{Cert: cert, Key: key, CA: ca}.Config(true)
	if err != nil {
		t.Fatal(err)
	}
	load := lightLoad
	load.Memory = 4 << 20
	for name, tlsConfig := range map[string]*tls.Config{"plain": nil, "TLS": server} {
		d := listenDestination(t, newMemGuest(t, load, false), ReceiveConfig{TLS: tlsConfig})
		c, err := net.Dial("tcp", strings.TrimPrefix(d.uri, "tcp:"))
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		<-d.done
		if !errors.Is(d.err, ErrQuietPeer) || !errors.Is(d.err, ErrNoHandshake) {
			t.Errorf("%s: a probe ended the wait with %v; want a quiet peer, no migration begun", name, d.err)
		}
	}
	// One that said something is no probe.
	d := listenDestination(t, newMemGuest(t, load, false), ReceiveConfig{})
	c, err := net.Dial("tcp", strings.TrimPrefix(d.uri, "tcp:"))
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("GET /"))
	c.Close()
	<-d.done
	if errors.Is(d.err, ErrQuietPeer) || !errors.Is(d.err, ErrNoHandshake) {
		t.Errorf("a peer that sent 5 bytes: %v; want a refusal, not a probe", d.err)
	}
}

// TestTLSFilesBounded: a TLS flag naming an endless file (/dev/zero) is
// refused after a few MiB, not read until memory runs out.
func TestTLSFilesBounded(t *testing.T) {
	if _, err := os.Stat("/dev/zero"); err != nil {
		t.Skip("no /dev/zero")
	}
	for _, f := range []TLSFiles{
		{Cert: "/dev/zero", Key: "/dev/zero", CA: "/dev/zero"},
	} {
		_, err := f.Config(true)
		if err == nil || !strings.Contains(err.Error(), "--tls-cert /dev/zero: more than 4 MiB, not a PEM file") {
			t.Errorf("%+v: %v", f, err)
		}
	}
}

// TestTLSFileFIFO: a TLS flag naming a FIFO nobody writes to is an error
// at once; the open waited for a writer for good, deaf to SIGTERM (found
// by a hostile-input walk). One written to is read.
func TestTLSFileFIFO(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skip(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := TLSFiles{Cert: fifo, Key: fifo, CA: fifo}.Config(true)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Error("a TLS config from an empty FIFO")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("reading a TLS flag's FIFO nobody writes to still waits after 10 s")
	}
	// A pipe written to, as a shell's process substitution gives
	// (/dev/fd/N): read as it comes.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	go func() {
		time.Sleep(100 * time.Millisecond)
		w.Write([]byte("-----BEGIN CERTIFICATE-----\n"))
		w.Close()
	}()
	b, err := readPEM("--tls-cert", fmt.Sprintf("/proc/self/fd/%d", r.Fd()))
	if err != nil || !strings.HasPrefix(string(b), "-----BEGIN") {
		t.Errorf("a pipe written to: %q, %v", b, err)
	}
}
