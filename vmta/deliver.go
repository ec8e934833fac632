package vmta

import (
	"context"
	"crypto/tls"
	"errors"
	"time"
)

// Options configure a Deliverer.
type Options struct {
	Resolver Resolver                         // required unless every destination is a literal IP
	Logf     func(format string, args ...any) // nil: silent
	Dial     DialFunc                         // nil: net.Dialer bound to the source IP
	// TLSConfig is cloned for each STARTTLS (RootCAs for tests); ServerName
	// and InsecureSkipVerify are set per destination.
	TLSConfig *tls.Config
	MaxHosts  int // MX hosts tried per Deliver (default 5)
	MaxAddrs  int // connection attempts per Deliver (default 5)
	MaxIdle   int // idle cached connections kept in all (default 1000)
	// SweepInterval is how often idle connections are checked for expiry (default 1s).
	SweepInterval time.Duration
}

// Deliverer delivers messages and caches connections; safe for concurrent use.
type Deliverer struct {
	opt Options
}

// NewDeliverer returns a Deliverer; Close it to release cached connections.
func NewDeliverer(opt Options) *Deliverer {
	return &Deliverer{opt: opt}
}

// Deliver sends msg to dest in one or more transactions on one connection
// and reports each recipient's reply.
func (d *Deliverer) Deliver(ctx context.Context, dest Destination, msg *Message) Result {
	res := Result{Rcpts: make([]RcptResult, len(msg.Rcpts)), Err: errors.New("vmta: not implemented yet")}
	for i := range res.Rcpts {
		res.Rcpts[i] = RcptResult{Reply: Reply{Code: 451, Enhanced: "4.3.0", Text: "delivery not implemented yet"}, Stage: StageConnect, Synthesized: true}
	}
	return res
}

// Close sends QUIT on and closes every cached connection.
func (d *Deliverer) Close() {}
