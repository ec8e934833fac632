package sluicetest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestReadAcct(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "acct.csv")
	if recs, err := ReadAcct(path); err != nil || recs != nil {
		t.Fatalf("missing file: %v %v", recs, err)
	}
	os.WriteFile(path, []byte("type,rcpt,dsnDiag\nd,a@x,\"smtp;250 ok, fine\"\nb,b@x,smtp;550 no\nd,c@x,tor"), 0o644)
	recs, err := ReadAcct(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[0]["dsnDiag"] != "smtp;250 ok, fine" || recs[1]["type"] != "b" {
		t.Errorf("records = %v (the torn last line must be left out)", recs)
	}
}

func TestWaitAcctAndLog(t *testing.T) {
	dir := t.TempDir()
	d := &Daemon{paths: Paths{AcctFile: filepath.Join(dir, "acct.csv"), LogFile: filepath.Join(dir, "sluice.log")}}
	go func() {
		time.Sleep(100 * time.Millisecond)
		os.WriteFile(d.paths.AcctFile, []byte("type,rcpt\nb,x@y\nd,a@b\n"), 0o644)
		os.WriteFile(d.paths.LogFile, []byte("Nov 29 10:18:33 h sluice/smtp[1]: Q: to=<a@b>, status=sent (ok)\n"), 0o644)
	}()
	recs, err := d.WaitAcct("d", 1, 3*time.Second)
	if err != nil || len(recs) != 1 || recs[0]["rcpt"] != "a@b" {
		t.Fatalf("WaitAcct = %v, %v", recs, err)
	}
	line, err := d.WaitLog("status=sent", 3*time.Second)
	if err != nil || !strings.Contains(line, "to=<a@b>") {
		t.Fatalf("WaitLog = %q, %v", line, err)
	}
	if _, err := d.WaitAcct("t", 1, 100*time.Millisecond); err == nil || !strings.Contains(err.Error(), `0 of 1 "t" records`) {
		t.Errorf("WaitAcct timeout error = %v", err)
	}
	if _, err := d.WaitLog("status=bounced", 100*time.Millisecond); err == nil {
		t.Error("WaitLog found a missing line")
	}
}
