package smtpd

import (
	"bytes"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

var errAuthSyntax = &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 5, 2}, Message: "Cannot decode AUTH response"}

// authFunc checks one set of credentials; identity is the SASL
// authorization identity ("" when the client did not ask for another).
type authFunc func(identity, user, pass string) error

// plainServer is SASL PLAIN (RFC 4616).
type plainServer struct {
	done  bool
	check authFunc
}

func (p *plainServer) Next(resp []byte) ([]byte, bool, error) {
	if p.done {
		return nil, false, sasl.ErrUnexpectedClientResponse
	}
	if resp == nil {
		// No initial response: ask for it with an empty challenge.
		return []byte{}, false, nil
	}
	p.done = true
	parts := bytes.Split(resp, []byte{0})
	if len(parts) != 3 {
		return nil, false, errAuthSyntax
	}
	return nil, true, p.check(string(parts[0]), string(parts[1]), string(parts[2]))
}

// loginServer is the obsolete but still common LOGIN mechanism
// (draft-murchison-sasl-login); go-sasl has only its client.
type loginServer struct {
	step  int
	user  string
	check authFunc
}

func (l *loginServer) Next(resp []byte) ([]byte, bool, error) {
	switch l.step {
	case 0:
		if resp == nil {
			l.step = 1
			return []byte("Username:"), false, nil
		}
		l.user, l.step = string(resp), 2
		return []byte("Password:"), false, nil
	case 1:
		l.user, l.step = string(resp), 2
		return []byte("Password:"), false, nil
	case 2:
		l.step = 3
		return nil, true, l.check("", l.user, string(resp))
	}
	return nil, false, sasl.ErrUnexpectedClientResponse
}
