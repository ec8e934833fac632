package bounce

import (
	"fmt"
	"strings"

	"github.com/sluicemta/sluice/spool"
)

// NotifyFlags is the RFC 3461 NOTIFY parameter of one recipient, the
// spool's type. The zero value means the client gave none.
type NotifyFlags = spool.Notify

// NOTIFY keywords.
const (
	NotifyNever   = spool.NotifyNever
	NotifySuccess = spool.NotifySuccess
	NotifyFailure = spool.NotifyFailure
	NotifyDelay   = spool.NotifyDelay
)

// ParseNotify parses a NOTIFY value ("NEVER" or a comma list of SUCCESS,
// FAILURE, DELAY; RFC 3461 4.1). NEVER combined with anything is an error.
func ParseNotify(s string) (NotifyFlags, error) {
	var f NotifyFlags
	for _, w := range strings.Split(s, ",") {
		switch strings.ToUpper(strings.TrimSpace(w)) {
		case "NEVER":
			f |= NotifyNever
		case "SUCCESS":
			f |= NotifySuccess
		case "FAILURE":
			f |= NotifyFailure
		case "DELAY":
			f |= NotifyDelay
		default:
			return 0, fmt.Errorf("bounce: NOTIFY %q: unknown keyword %q", s, w)
		}
	}
	if f&NotifyNever != 0 && f != NotifyNever {
		return 0, fmt.Errorf("bounce: NOTIFY %q: NEVER cannot be combined", s)
	}
	return f, nil
}

// ShouldNotify reports whether a DSN with the given action ("failed",
// "delayed", "delivered", "relayed", "expanded") goes to sender for a
// recipient with these NOTIFY flags. A null sender never gets one (that is
// how bounce loops are avoided), NEVER suppresses all, and without NOTIFY
// the default is failures and delays (RFC 3461 4.1 leaves delays to the
// MTA; sluice sends them, paced by notify-of-delay-every). Success, relay
// and expansion notices only go out when SUCCESS was asked for.
func ShouldNotify(sender string, notify NotifyFlags, action string) bool {
	if s := strings.TrimSpace(sender); s == "" || s == "<>" {
		return false
	}
	if notify&NotifyNever != 0 {
		return false
	}
	if notify == 0 {
		notify = NotifyFailure | NotifyDelay
	}
	switch strings.ToLower(action) {
	case "failed":
		return notify&NotifyFailure != 0
	case "delayed":
		return notify&NotifyDelay != 0
	case "delivered", "relayed", "expanded":
		return notify&NotifySuccess != 0
	}
	return false
}
