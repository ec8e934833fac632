// Package vmta delivers mail to remote SMTP servers: destination routing
// (MX or fixed hosts), an SMTP client with pipelining and STARTTLS, and a
// connection cache keyed by source IP and destination host.
//
// The queue manager decides what is due and how many connections a queue
// may use; this package carries out one transaction (one message, the
// recipients of one destination) and reports each recipient's reply. Every
// failure is reported as an SMTP reply, synthesized when the remote server
// never said anything, so the caller classifies all outcomes one way.
//
// # Routing
//
// Without route/smtp-hosts the recipient domain's MX set is used (IDN
// domains are looked up in A-labels), equal preferences shuffled, at most
// Options.MaxHosts hosts and Options.MaxAddrs connection attempts per
// Deliver. No MX: the domain's own A/AAAA (RFC 5321 5.1). A null MX
// bounces at once (556 5.1.10), NXDOMAIN too (550 5.1.2), SERVFAIL and
// timeouts defer (451 4.4.3, stage "dns": the queue manager retries after
// retry-after-dns-error). An MX host whose address is this MTA
// (Destination.IsSelf) ends the list; as the best MX it bounces 5.4.6.
// Addresses are dialled from the source of their family (SourceIP4,
// SourceIP6).
//
// # Content
//
// A server without 8BITMIME gets 8-bit content converted to
// quoted-printable (Downgrade), and lines over 998 octets are encoded for
// every server; what cannot be converted (8-bit headers) bounces with
// 5.6.3, an SMTPUTF8 message a server without SMTPUTF8 cannot carry with
// 5.6.7 (an internationalized domain alone is sent in A-labels). DKIM
// signing must come after conversion: a signer calls Downgrade first and
// signs its output, which this package then sends unchanged.
//
// # Why DATA and not BDAT
//
// CHUNKING (RFC 3030) is not used. With PIPELINING a transaction already
// costs two round trips (MAIL..DATA, then content and dot); BDAT LAST
// could save the 354 round trip, but only by sending the whole content
// before knowing whether any recipient was accepted, which for bulk mail
// (many refused recipients, large bodies) wastes more than it saves, and
// BINARYMIME content, the case BDAT exists for, is never queued here. The
// dot-stuffing BDAT avoids costs a byte scan we do anyway for line ends.
// Some deployed BDAT implementations are buggy, and a BDAT LAST timeout
// leaves the same unknown outcome as a dot timeout, so it buys nothing
// there either.
//
// # Data termination
//
// When the content has been sent and the reply to the final dot does not
// come within smtp-data-termination-timeout (or the connection drops),
// the outcome is unknown: the server may have queued the message. sluice
// defers those recipients (RcptResult.OutcomeUnknown, Result.OutcomeUnknown,
// "outcome unknown" in the reply text) and never reuses the connection: a
// possible duplicate is better than a possible loss, and RFC 5321 has no
// way to ask a server afterwards what it did. To make the case rare,
// nothing is sent between the dot and its reply, the default timeout is
// RFC 5321 4.5.3.2.6's 10 minutes, and the flag lets logs and accounting
// name the possible duplicate.
//
// # 421
//
// A 421 (greeting or mid-session) closes the session; the recipients it
// answered are deferred and Result.QueueDefer asks the queue manager to
// hold the whole destination for a short time (QueueDefer421).
//
// # Probes
//
// A Message with Probe set (sendmail -bv) is routed, dialled, greeted and
// secured exactly as a delivery, but the transaction ends after RCPT TO
// with RSET instead of DATA (pipelined with MAIL and RCPT when the server
// offers PIPELINING): each recipient's RCPT reply is its result
// (RcptResult.Probed for an accepted one) and nothing is delivered. The
// session is cached and reused like any other.
//
// # Smarthost
//
// Destination.AuthUsername/AuthPassword log in with AUTH PLAIN or LOGIN,
// only over TLS: implicit TLS on port 465 (or ImplicitTLS), STARTTLS
// required elsewhere. A refused login defers (4.7.0) and the next host is
// tried.
package vmta
