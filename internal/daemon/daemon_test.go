package daemon

import (
	"testing"

	"github.com/sluicemta/sluice/internal/smtpd"
)

func TestListenerMode(t *testing.T) {
	for port, want := range map[int]smtpd.Mode{25: smtpd.Plain, 2525: smtpd.Plain, 465: smtpd.ImplicitTLS, 587: smtpd.Submission} {
		if got := listenerMode(port); got != want {
			t.Errorf("port %d: %v, want %v", port, got, want)
		}
	}
}
