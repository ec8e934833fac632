package tlsname

import (
	"crypto/tls"
	"testing"
)

func TestVersion(t *testing.T) {
	for v, want := range map[uint16]string{tls.VersionTLS12: "TLSv1.2", tls.VersionTLS13: "TLSv1.3", tls.VersionTLS10: "TLSv1", tls.VersionTLS11: "TLSv1.1", 0: ""} {
		if got := Version(v); got != want {
			t.Errorf("Version(%#x) = %q, want %q", v, got, want)
		}
	}
}
