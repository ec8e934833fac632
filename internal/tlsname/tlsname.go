// Package tlsname names TLS protocol versions as OpenSSL, and so Postfix's
// logs, PowerMTA's accounting and milters' {tls_version}, spell them.
package tlsname

import "crypto/tls"

// Version returns "TLSv1", "TLSv1.1", "TLSv1.2" or "TLSv1.3" for v, Go's
// name for any other, and "" for 0 (no TLS).
func Version(v uint16) string {
	switch v {
	case 0:
		return ""
	case tls.VersionTLS10:
		return "TLSv1"
	case tls.VersionTLS11:
		return "TLSv1.1"
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS13:
		return "TLSv1.3"
	}
	return tls.VersionName(v)
}
