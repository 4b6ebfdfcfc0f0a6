package migrator

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
)

// TLSFiles are the PEM files of mutual TLS: this end's certificate and key,
// and the CA that signed the other end's.
type TLSFiles struct {
	Cert, Key, CA string
}

// Enabled reports whether any file is set.
func (f TLSFiles) Enabled() bool { return f.Cert != "" || f.Key != "" || f.CA != "" }

// Config loads the files into a TLS configuration for a client (the
// migration source) or a server (the destination). Both ends present a
// certificate and verify the other's against the CA.
func (f TLSFiles) Config(server bool) (*tls.Config, error) {
	if f.Cert == "" || f.Key == "" || f.CA == "" {
		return nil, errors.New("mutual TLS needs all three of --tls-cert, --tls-key and --tls-ca")
	}
	certPEM, err := readPEM("--tls-cert", f.Cert)
	if err != nil {
		return nil, err
	}
	keyPEM, err := readPEM("--tls-key", f.Key)
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load TLS certificate: %w", err)
	}
	caPEM, err := readPEM("--tls-ca", f.CA)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("TLS CA %s holds no PEM certificate", f.CA)
	}
	c := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	if server {
		c.ClientCAs = pool
		c.ClientAuth = tls.RequireAndVerifyClientCert
	} else {
		c.RootCAs = pool
		// Present the certificate even where the destination's CA did
		// not sign it (Go's client would send none), so that the
		// destination can say what was wrong with it.
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	}
	return c, nil
}

// maxPEM bounds what a TLS file flag reads: certificate chains and CA
// bundles are kilobytes (Debian's whole bundle, some 200 KiB); a flag
// naming /dev/zero read without end (24 GB, then the OOM killer).
const maxPEM = 4 << 20

// readPEM reads the PEM file of flag, at most maxPEM bytes. It opens
// without blocking: a FIFO nobody writes to held the command in its open
// for good, deaf to SIGTERM (found by a hostile-input walk); it now reads
// as empty, and a FIFO or pipe that is written to is read as it comes.
func readPEM(flag, path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPEM+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", flag, path, err)
	}
	if len(b) > maxPEM {
		return nil, fmt.Errorf("%s %s: more than %d MiB, not a PEM file", flag, path, maxPEM>>20)
	}
	return b, nil
}

// tlsHint adds to a failed TLS handshake, or a read just after one, what a
// user would change: which end's certificate was refused, and by which
// flag's file. peer is the other end: "destination" or "source".
func tlsHint(err error, peer string) error {
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	var op *net.OpError
	switch {
	case errors.As(err, &unknown):
		return fmt.Errorf("%w (the %s's certificate is not signed by the CA this side trusts, its --tls-ca)", err, peer)
	case errors.As(err, &host):
		return fmt.Errorf("%w (the %s's certificate does not name the address dialled)", err, peer)
	case errors.As(err, &invalid):
		return fmt.Errorf("%w (the %s's certificate cannot be used: expired, not yet valid or not for this use)", err, peer)
	case errors.As(err, &op) && op.Op == "remote error":
		// Only the alert: the record reader's context around it says
		// nothing here.
		return fmt.Errorf("the %s refused this side's certificate (%w): it must be signed by the CA the %s trusts, its --tls-ca", peer, op, peer)
	}
	return err
}
