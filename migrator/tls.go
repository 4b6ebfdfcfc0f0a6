package migrator

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"syscall"
	"time"
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
	client, srv, err := f.Configs()
	if server {
		return srv, err
	}
	return client, err
}

// Configs loads the files once into the configurations of both ends, for
// a process that is both (vm run: a source and, with --incoming, a
// destination), so that what is wrong with them is said once.
func (f TLSFiles) Configs() (client, server *tls.Config, err error) {
	if f.Cert == "" || f.Key == "" || f.CA == "" {
		return nil, nil, errors.New("mutual TLS needs all three of --tls-cert, --tls-key and --tls-ca")
	}
	certPEM, err := readPEM("--tls-cert", f.Cert)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := readPEM("--tls-key", f.Key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("--tls-cert %s, --tls-key %s: %w", f.Cert, f.Key, err)
	}
	// This end's own certificate out of its dates failed every migration
	// at the other end's check, the destination starting without a word
	// (found by a security walk).
	if leaf := cert.Leaf; leaf != nil {
		switch now := time.Now(); {
		case now.After(leaf.NotAfter):
			return nil, nil, fmt.Errorf("--tls-cert %s expired on %s: the other end refuses it; renew it", f.Cert, leaf.NotAfter.UTC().Format(time.DateTime+" MST"))
		case now.Before(leaf.NotBefore):
			// Warned of, not refused: the other end judges by its own
			// clock, and a certificate issued a moment ago on a host a
			// few seconds ahead is good there (review 63).
			slog.Warn("the TLS certificate is not valid yet by this host's clock: the other end refuses it if its clock agrees", "file", f.Cert, "not-before", leaf.NotBefore.UTC().Format(time.DateTime+" MST"))
		}
	}
	// Group read is Debian's way (root:ssl-cert 0640): only others are
	// warned of (review 63).
	if fi, err := os.Stat(f.Key); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o007 != 0 {
		slog.Warn("the TLS private key can be read by any user: chmod o-rwx it", "file", f.Key, "mode", fmt.Sprintf("%04o", fi.Mode().Perm()))
	}
	caPEM, err := readPEM("--tls-ca", f.CA)
	if err != nil {
		return nil, nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, nil, fmt.Errorf("TLS CA %s holds no PEM certificate", f.CA)
	}
	server = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13,
		ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}
	client = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13,
		RootCAs: pool,
		// Present the certificate even where the destination's CA did
		// not sign it (Go's client would send none), so that the
		// destination can say what was wrong with it.
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }}
	return client, server, nil
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
	var header tls.RecordHeaderError
	switch {
	case errors.As(err, &unknown):
		return fmt.Errorf("%w (the %s's certificate is not signed by the CA this side trusts, its --tls-ca)", err, peer)
	case errors.As(err, &host):
		return fmt.Errorf("%w (the %s's certificate does not name the address dialled)", err, peer)
	case errors.As(err, &invalid) && invalid.Reason == x509.IncompatibleUsage:
		// Said for what it is (walk 160: "expired, not yet valid or not
		// for this use" of a certificate for server use only).
		use, eku := "server", "serverAuth"
		if peer == "source" {
			use, eku = "client", "clientAuth"
		}
		return fmt.Errorf("%w (the %s's certificate is not for %s use: its extendedKeyUsage lacks %s)", err, peer, use, eku)
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return fmt.Errorf("%w (the %s's certificate has expired, or is not valid yet, by this side's clock)", err, peer)
	case errors.As(err, &invalid):
		return fmt.Errorf("%w (the %s's certificate cannot be used: expired, not yet valid or not for this use)", err, peer)
	case errors.As(err, &op) && op.Op == "remote error":
		// Only the alert: the record reader's context around it says
		// nothing here. It says what the other end found wrong (Go's
		// own alerts for a certificate it verified): all of them were
		// said to want another CA (found by a security walk).
		why := "it must be signed by the CA the " + peer + " trusts, its --tls-ca"
		switch alert := op.Err.Error(); {
		case strings.HasSuffix(alert, "expired certificate"):
			why = "it has expired, or is not valid yet, by the " + peer + "'s clock: renew --tls-cert"
		case strings.HasSuffix(alert, "unsupported certificate"):
			why = "its key's type is one the " + peer + " does not take"
		case strings.HasSuffix(alert, "bad certificate") && peer == "source":
			why = "it must be signed by the CA the source trusts, its --tls-ca, be within its dates and name the address the source dialled (its log says which)"
		case strings.HasSuffix(alert, "bad certificate"):
			why = "it must be signed by the CA the destination trusts, its --tls-ca, within its dates and for client use (the destination's log says which)"
		case strings.HasSuffix(alert, "certificate required"):
			why = "this side sent none: give --tls-cert and --tls-key"
		}
		return fmt.Errorf("the %s refused this side's certificate (%w): %s", peer, op, why)
	case errors.As(err, &header) && httpRequest(header.RecordHeader[:]):
		// An HTTP client at a TLS destination was said to be a source
		// without TLS (walk 68).
		return fmt.Errorf("%w (an HTTP request, not a pagecast migration: this port takes migrations only)", err)
	case errors.As(err, &header):
		return fmt.Errorf("%w (the %s does not speak TLS: it was started without --tls-cert, --tls-key and --tls-ca, and this side with them; give both ends the same, or neither)", err, peer)
	}
	return err
}
