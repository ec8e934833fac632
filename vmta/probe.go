package vmta

// Probe mode (sendmail -bv): the transaction stops after RCPT TO. As
// Postfix's smtp(8) does for a verification request, the recipients'
// replies are the result and RSET takes the place of DATA, so nothing is
// ever delivered and the session stays usable: it is cached and reused
// like any other.

// pipelinedProbe sends [RSET] MAIL RCPT... RSET in one write and reads the
// replies in one wait (RFC 2920: RSET may be pipelined like DATA).
func (c *conn) pipelinedProbe(dest *Destination, t *txn, reset bool, mail string, rcpts []string) ([]int, error) {
	batch := envelopeBatch(reset, mail, rcpts, "RSET")
	if len(batch) > maxSyncBatch {
		// A batch bigger than the socket buffers could deadlock against a
		// server that writes replies as it reads (RFC 2920 5); a probe
		// carries no content, so one command at a time costs little here.
		return c.lockstepProbe(dest, t, reset, mail, rcpts)
	}
	if err := c.sendBatch(dest, t, reset, batch); err != nil {
		return nil, err
	}
	mrep, replies, gone, err := c.readEnvelope(dest, t, reset, len(rcpts))
	if err != nil {
		return nil, err
	}
	if gone == nil {
		c.endProbe(dest, false)
	}
	return c.afterProbe(dest, t, mrep, replies)
}

// lockstepProbe is the probe without PIPELINING: one command, one wait.
func (c *conn) lockstepProbe(dest *Destination, t *txn, reset bool, mail string, rcpts []string) ([]int, error) {
	mrep, replies, gone, err := c.lockstepEnvelope(dest, t, reset, mail, rcpts)
	if err != nil {
		return nil, err
	}
	if mrep.Code != 421 && gone == nil {
		c.endProbe(dest, true)
	}
	return c.afterProbe(dest, t, mrep, replies)
}

// endProbe ends the transaction with RSET (sent already when pipelined)
// and reads its reply; a session whose RSET fails is not reused. The
// recipients' replies stand either way.
func (c *conn) endProbe(dest *Destination, send bool) {
	var rep Reply
	var err error
	if send {
		rep, _, err = c.cmd(dest.CommandTimeout, "RSET")
	} else {
		rep, _, err = c.read(dest.CommandTimeout)
	}
	if err != nil || rep.Code != 250 {
		c.broken = true
	}
}

// afterProbe applies the MAIL and RCPT replies of a probe. Accepted
// recipients keep their 2xx RCPT reply (RcptResult.Probed); it returns,
// as afterData does, the recipients refused with "452 4.5.3 too many
// recipients" for a next transaction.
func (c *conn) afterProbe(dest *Destination, t *txn, mrep Reply, replies []Reply) ([]int, error) {
	if mrep.Code/100 != 2 {
		t.setAll(t.idx, StageMail, mrep, false)
		return nil, c.closing(mrep)
	}
	accepted, later, closeErr := c.applyRcpts(dest, t, replies)
	// A probe is a transaction for max-msg-per-connection: it costs the
	// server as much as one up to DATA.
	c.msgs++
	if closeErr != nil {
		return nil, closeErr
	}
	if len(accepted) == 0 {
		// Nothing went through: a next transaction would be refused the
		// same way. The 452s stand (deferred), as in afterData.
		return nil, nil
	}
	return later, nil
}
