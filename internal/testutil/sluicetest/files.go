package sluicetest

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Acct is one accounting record, by field name ("type", "rcpt", "dsnStatus", ...).
type Acct map[string]string

// ReadAcct parses a PowerMTA-style accounting CSV by its header line. A
// missing file reads as no records; a torn last line (the daemon is
// writing) is left out.
func ReadAcct(path string) ([]Acct, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if i := strings.LastIndexByte(string(data), '\n'); i >= 0 {
		data = data[:i+1]
	} else {
		return nil, nil
	}
	r := csv.NewReader(strings.NewReader(string(data)))
	header, err := r.Read()
	if err == io.EOF {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: header: %w", path, err)
	}
	var out []Acct
	for {
		row, err := r.Read()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("%s: %w", path, err)
		}
		rec := Acct{}
		for i, name := range header {
			if i < len(row) {
				rec[name] = row[i]
			}
		}
		out = append(out, rec)
	}
}

// Accounting reads the daemon's accounting file.
func (d *Daemon) Accounting() ([]Acct, error) { return ReadAcct(d.paths.AcctFile) }

// WaitAcct waits until the accounting file holds at least n records of
// type typ ("" = any) and returns those records.
func (d *Daemon) WaitAcct(typ string, n int, timeout time.Duration) ([]Acct, error) {
	deadline := time.Now().Add(timeout)
	for {
		all, err := d.Accounting()
		var got []Acct
		for _, a := range all {
			if typ == "" || a["type"] == typ {
				got = append(got, a)
			}
		}
		if err == nil && len(got) >= n {
			return got, nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("%d of %d %q records after %v (%d records in all)", len(got), n, typ, timeout, len(all))
			}
			return got, fmt.Errorf("sluicetest: accounting %s: %w", d.paths.AcctFile, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WaitLog waits until the mail log holds a line containing substr and
// returns that line.
func (d *Daemon) WaitLog(substr string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		data, _ := os.ReadFile(d.paths.LogFile)
		for _, line := range strings.Split(string(data), "\n") {
			if strings.Contains(line, substr) {
				return line, nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("sluicetest: no line with %q in %s after %v; log:\n%s", substr, d.paths.LogFile, timeout, data)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
