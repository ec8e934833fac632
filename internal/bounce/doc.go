// Package bounce classifies SMTP replies, and builds and parses delivery
// status notifications (RFC 3464, RFC 6533 for SMTPUTF8 mail).
//
// # Classification
//
// [Classify] turns a reply (basic code, enhanced code, text) into an
// [Outcome], an enhanced status whose class agrees with it, and a PowerMTA
// bounce category found by [Categorize] over ordered patterns.
// [StatusText] gives the RFC 3463 wording that accounting prints.
//
// # When to send a DSN (rules for the caller, the queue manager)
//
//   - Ask [ShouldNotify] for each recipient: never for a null sender
//     (MAIL FROM:<>), never with NOTIFY=NEVER; failures and delays by
//     default; success, relay and expansion notices only for NOTIFY=SUCCESS.
//   - Send ONE DSN per message per event, covering every recipient that
//     event affected (all recipients bounced by one reply, all those found
//     expired in one pass), not one per recipient.
//   - A DSN is sent with a null envelope sender (MAIL FROM:<>), so that it
//     can never cause another DSN.
//   - A DSN that itself cannot be delivered is a double bounce: it goes to
//     the postmaster ([Report.Postmaster]) as a new failure report, and if
//     that fails too it is dropped and logged, never bounced again.
//   - Queue DSNs with a shorter lifetime than ordinary mail (Postfix has a
//     separate bounce_queue_lifetime for this; one day is a sane value) so
//     undeliverable notices do not fill the spool.
//   - Delay notices are repeated at most every notify-of-delay-every.
//   - When the returned content has 8-bit bytes (it often has), send the
//     DSN with BODY=8BITMIME, and with SMTPUTF8 when [Report.SMTPUTF8].
//
// # Verification reports
//
// A report whose recipients have the actions [ActionDeliverable] or
// [ActionUndeliverable] is a verification report (sendmail -bv), built as
// Postfix's "verify" template: Subject "Mail Delivery Status Report", "Enclosed
// is the mail delivery report that you requested.", one line per recipient
// ([RcptReport.Text], e.g. "delivery via mx[ip]:25: 250 2.1.5 Ok"), and the
// original's headers only. It is sent to the sender, never to a null one.
//
// # Parsing
//
// [Parse] reads an incoming DSN (multipart/report; report-type=
// delivery-status, possibly nested in another multipart) back into a
// [Report]. It treats its input as hostile: bounded nesting, bounded
// counts, no panics.
package bounce
