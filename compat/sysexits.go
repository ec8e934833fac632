// Package compat holds sluice's Postfix/Sendmail drop-in behaviour: the
// sendmail(1) option set, message preparation for locally submitted mail,
// the mailq/postqueue output formats, postsuper's arguments and lines, and
// the local submission protocol between those commands and the daemon.
//
// Nothing here touches the spool or the network; the daemon implements
// Backend and mounts Handler on its control socket.
package compat

import "fmt"

// Exit codes from sysexits.h, as Postfix's sendmail returns them.
const (
	ExitOK          = 0
	ExitUsage       = 64 // EX_USAGE: bad option or arguments
	ExitDataErr     = 65 // EX_DATAERR: unreadable input, bad headers under -t
	ExitNoInput     = 66 // EX_NOINPUT
	ExitNoUser      = 67 // EX_NOUSER
	ExitNoHost      = 68 // EX_NOHOST
	ExitUnavailable = 69 // EX_UNAVAILABLE: service unavailable
	ExitSoftware    = 70 // EX_SOFTWARE: internal error
	ExitOSErr       = 71 // EX_OSERR: no login name, system error
	ExitOSFile      = 72 // EX_OSFILE
	ExitCantCreat   = 73 // EX_CANTCREAT
	ExitIOErr       = 74 // EX_IOERR
	ExitTempFail    = 75 // EX_TEMPFAIL: queue write error, daemon unreachable
	ExitProtocol    = 76 // EX_PROTOCOL
	ExitNoPerm      = 77 // EX_NOPERM: not permitted
	ExitConfig      = 78 // EX_CONFIG: bad configuration
)

// ExitError is an error that carries the process exit status the command
// must return. Msg is what the command prints (after "sendmail: fatal: ").
type ExitError struct {
	Code int
	Msg  string
	Err  error // optional cause, for errors.Is/As
}

func (e *ExitError) Error() string {
	if e.Err != nil && e.Msg == "" {
		return e.Err.Error()
	}
	return e.Msg
}

func (e *ExitError) Unwrap() error { return e.Err }

// Exitf returns an *ExitError with a formatted message.
func Exitf(code int, format string, args ...any) *ExitError {
	return &ExitError{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// ExitCode maps err to a process exit status: 0 for nil, the carried code
// for an *ExitError anywhere in the chain, else EX_TEMPFAIL, which is what
// Postfix's sendmail returns for any fatal error without a specific code.
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	for e := err; e != nil; {
		if x, ok := e.(*ExitError); ok {
			return x.Code
		}
		u, ok := e.(interface{ Unwrap() error })
		if !ok {
			break
		}
		e = u.Unwrap()
	}
	return ExitTempFail
}
