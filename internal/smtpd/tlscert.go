package smtpd

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"
)

// certReloader serves a certificate and reloads it when the files change,
// checked by a stat of both files at each handshake (cheap next to the
// handshake itself). A reload that fails (say the key was rewritten before
// the certificate) keeps the old pair and is retried at the next handshake.
type certReloader struct {
	certFile, keyFile string
	logf              func(string, ...any)

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   [2]fileStamp
	failed  [2]fileStamp // files that did not load; not retried until they change
	lastErr string
}

type fileStamp struct {
	mod  time.Time
	size int64
}

func newCertReloader(certFile, keyFile string, logf func(string, ...any)) (*certReloader, error) {
	cr := &certReloader{certFile: certFile, keyFile: keyFile, logf: logf}
	st, err := cr.stat()
	if err != nil {
		return nil, err
	}
	if err := cr.load(st); err != nil {
		return nil, err
	}
	return cr, nil
}

func (cr *certReloader) stat() ([2]fileStamp, error) {
	var st [2]fileStamp
	for i, f := range []string{cr.certFile, cr.keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return st, fmt.Errorf("smtpd: tls certificate: %w", err)
		}
		st[i] = fileStamp{fi.ModTime(), fi.Size()}
	}
	return st, nil
}

func (cr *certReloader) load(st [2]fileStamp) error {
	c, err := tls.LoadX509KeyPair(cr.certFile, cr.keyFile)
	if err != nil {
		return fmt.Errorf("smtpd: load certificate %s: %w", cr.certFile, err)
	}
	cr.cert, cr.stamp = &c, st
	return nil
}

func (cr *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	st, err := cr.stat()
	if err == nil && st != cr.stamp && st != cr.failed {
		if err = cr.load(st); err != nil {
			cr.failed = st
		}
	}
	if err != nil {
		// Log each distinct failure once, keep serving the old pair.
		if msg := err.Error(); msg != cr.lastErr {
			cr.lastErr = msg
			cr.logf("%v (keeping the previous certificate)", err)
		}
	} else {
		cr.lastErr = ""
	}
	return cr.cert, nil
}
