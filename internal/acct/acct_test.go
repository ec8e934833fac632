package acct

import (
	"bytes"
	"encoding/csv"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files")

var edt = time.FixedZone("EDT", -4*3600)

func fixedOpts(recs ...string) Options {
	return Options{
		Records:  recs,
		Location: edt,
		Now:      func() time.Time { return time.Date(2016, 8, 1, 18, 6, 1, 0, time.UTC) },
	}
}

func sampleRecords() []*Record {
	queued := time.Date(2016, 8, 1, 14, 5, 0, 0, edt)
	first := time.Date(2016, 8, 1, 14, 5, 2, 0, edt)
	logged := time.Date(2016, 8, 1, 14, 6, 1, 0, edt)
	mx := Host{Name: "mx.example.com", IP: netip.MustParseAddr("192.0.2.1")}
	src := Host{Name: "app1.example.org", IP: netip.MustParseAddr("127.0.0.1")}
	base := Record{
		TimeLogged: logged, TimeQueued: queued, TimeImprinted: queued, TimeFirstAttempt: first,
		Orig: "bounces@example.org", Rcpt: "user@example.com", Orcpt: "rfc822;user@example.com",
		SrcType: "smtp", SrcMta: src, RcvSmtpUser: "app1",
		DlvType: "smtp", DlvSourceIP: netip.MustParseAddr("198.51.100.7"), DlvDestinationIP: mx.IP,
		DlvEsmtpAvailable: []string{"8BITMIME", "DSN", "PIPELINING", "SIZE", "STARTTLS"},
		DlvSize:           2048, Vmta: "mta1", VmtaPool: "default", Queue: "example.com/mta1",
		JobID: "job-42", EnvID: "env-1", QueueID: "4Zk3q1b2CDzBCDFG",
	}
	d := base
	d.Type, d.DsnAction, d.DsnStatus, d.BounceCat = TypeDelivered, ActionRelayed, "2.0.0", "success"
	d.DsnDiag, d.DsnMta = SMTPDiag("250 2.0.0 OK 1470074761 x12si"), mx
	d.DlvTLSProtocol, d.DlvTLSCipher = "TLSv1.3", "TLS_AES_128_GCM_SHA256"

	b := base
	b.Type, b.DsnAction, b.DsnStatus, b.BounceCat = TypeBounced, ActionFailed, "5.1.1", "bad-mailbox"
	b.Rcpt, b.Orcpt = "nobody@example.com", ""
	b.DsnDiag, b.DsnMta = SMTPDiag("550-5.1.1 The email account that you tried to reach does not exist,\n550 5.1.1 \"please\" check"), mx

	tr := base
	tr.Type, tr.DsnAction, tr.DsnStatus, tr.BounceCat = TypeTransient, ActionDelayed, "4.7.0", "policy-related"
	tr.DsnDiag, tr.DsnMta = "smtp;421 4.7.0 [192.0.2.1] try again later", mx

	r := Record{Type: TypeReceived, TimeLogged: queued, TimeQueued: queued, Orig: "bounces@example.org",
		Rcpt: "user@example.com", SrcType: "api", SrcMta: Host{Name: "localhost"}, JobID: "job-42", QueueID: "4Zk3q1b2CDzBCDFG"}
	return []*Record{&d, &b, &tr, &r}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func parseCSV(t *testing.T, path string) [][]string {
	t.Helper()
	rows, err := csv.NewReader(strings.NewReader(readFile(t, path))).ReadAll()
	if err != nil {
		t.Fatalf("%s is not valid CSV: %v", path, err)
	}
	return rows
}

func TestGolden(t *testing.T) {
	path := filepath.Join(t.TempDir(), "acct.csv")
	w, err := Open(path, fixedOpts("d", "b", "t", "r"))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteBatch(sampleRecords()); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got := readFile(t, path)
	golden := filepath.Join("testdata", "delivery.golden.csv")
	if *update {
		os.WriteFile(golden, []byte(got), 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("accounting file differs from %s (-update rewrites it):\ngot:\n%s\nwant:\n%s", golden, got, want)
	}
	// By name, as a consumer reads it.
	rows := parseCSV(t, path)
	idx := map[string]int{}
	for i, h := range rows[0] {
		idx[h] = i
	}
	checks := []struct {
		row         int
		field, want string
	}{
		{1, "type", "d"},
		{1, "timeLogged", "2016-08-01 14:06:01-0400"},
		{1, "totalSecondsQueued", "61"},
		{1, "dsnStatus", "2.0.0 (success)"},
		{1, "dsnMta", "mx.example.com (192.0.2.1)"},
		{1, "srcMta", "app1.example.org (127.0.0.1)"},
		{1, "dlvEsmtpAvailable", "8BITMIME,DSN,PIPELINING,SIZE,STARTTLS"},
		{1, "queueId", "4Zk3q1b2CDzBCDFG"},
		{1, "dlvTlsProtocol", "TLSv1.3"},
		{2, "dsnStatus", "5.1.1 (bad destination mailbox address)"},
		{2, "dsnDiag", `smtp;550-5.1.1 The email account that you tried to reach does not exist, 550 5.1.1 "please" check`},
		{2, "dsnAction", "failed"},
		{3, "dsnAction", "delayed"},
		{4, "srcType", "api"},
		{4, "dlvSize", ""},
		{4, "srcMta", "localhost"},
	}
	for _, c := range checks {
		if got := rows[c.row][idx[c.field]]; got != c.want {
			t.Errorf("row %d %s = %q, want %q", c.row, c.field, got, c.want)
		}
	}
	if strings.Join(rows[0], ",") != strings.Join(DeliveryFields, ",") {
		t.Errorf("header = %v", rows[0])
	}
	if len(DeliveryFields) != 30 || DeliveryFields[26] != "envId" || DeliveryFields[27] != "queueId" {
		t.Error("PowerMTA's 27 fields must come first, sluice's after")
	}
}

func TestHeaderOncePerFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "acct.csv")
	for i := 0; i < 3; i++ {
		w, err := Open(path, fixedOpts("d"))
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Write(sampleRecords()[0]); err != nil {
			t.Fatal(err)
		}
		w.Close()
	}
	rows := parseCSV(t, path)
	if len(rows) != 4 || rows[0][0] != "type" || rows[1][0] != "d" || rows[3][0] != "d" {
		t.Errorf("rows = %v", rows)
	}
	if n := strings.Count(readFile(t, path), "type,timeLogged"); n != 1 {
		t.Errorf("%d header lines", n)
	}
}

func TestHeaderWrittenAtOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "acct.csv")
	w, err := Open(path, fixedOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if got := readFile(t, path); got != strings.Join(DeliveryFields, ",")+"\n" {
		t.Errorf("new file = %q", got)
	}
}

func TestQuotingAndOneLinePerRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "acct.csv")
	w, err := Open(path, fixedOpts("b"))
	if err != nil {
		t.Fatal(err)
	}
	nasty := []string{
		`plain`,
		`comma, inside`,
		`"quoted" and ""doubled""`,
		"line\r\nbreak\nand\ttab",
		"trailing space ",
		"",
		"ünïcödé@exämple.com",
	}
	for _, v := range nasty {
		w.Write(&Record{Type: TypeBounced, Rcpt: v, DsnDiag: "smtp;" + v, Orig: v})
	}
	w.Close()
	text := readFile(t, path)
	if lines := strings.Count(text, "\n"); lines != len(nasty)+1 {
		t.Errorf("%d lines for %d records:\n%s", lines, len(nasty), text)
	}
	rows := parseCSV(t, path)
	rcpt := 7
	for i, v := range nasty {
		want := strings.NewReplacer("\r", " ", "\n", " ", "\t", " ").Replace(v)
		if got := rows[i+1][rcpt]; got != want {
			t.Errorf("rcpt %d = %q, want %q", i, got, want)
		}
	}
	if !strings.Contains(text, `"comma, inside"`) || !strings.Contains(text, `"""quoted"" and """"doubled"""""`) {
		t.Errorf("quoting wrong:\n%s", text)
	}
}

func TestFiltering(t *testing.T) {
	path := filepath.Join(t.TempDir(), "acct.csv")
	w, err := Open(path, fixedOpts("b", "t"))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteBatch(sampleRecords()); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(&Record{Type: "x"}); err == nil {
		t.Error("unknown type accepted")
	}
	w.Close()
	var types []string
	for _, r := range parseCSV(t, path)[1:] {
		types = append(types, r[0])
	}
	if strings.Join(types, ",") != "b,t" {
		t.Errorf("types written = %v", types)
	}
	if !w.Wants("b") || w.Wants("d") {
		t.Error("Wants wrong")
	}
	if err := w.Write(sampleRecords()[1]); err == nil {
		t.Error("write after Close succeeded")
	}
}

func TestDefaultRecordsAreDAndB(t *testing.T) {
	w, err := Open(filepath.Join(t.TempDir(), "a.csv"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for typ, want := range map[string]bool{"d": true, "b": true, "t": false, "r": false, "f": false} {
		if w.Wants(typ) != want {
			t.Errorf("Wants(%s) = %v", typ, !want)
		}
	}
}

func TestReportFamily(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fbl.csv")
	w, err := Open(path, fixedOpts("f", "rb"))
	if err != nil {
		t.Fatal(err)
	}
	w.Write(&Record{Type: TypeFeedback, Orig: "bounces@example.org", Rcpt: "user@example.com", FeedbackType: "abuse",
		Format: "arf", UserAgent: "Yahoo!-Mail-Feedback/2.0", ReportingMta: "mta1.yahoo.com", ReportedDomain: "example.org",
		RepSourceIP: netip.MustParseAddr("198.51.100.7"), JobID: "job-42"})
	w.Write(&Record{Type: TypeRemoteBounce, Rcpt: "gone@example.com", DsnAction: "failed", DsnStatus: "5.1.1",
		DsnReportingMta: "dns; mx.example.com"})
	w.Write(sampleRecords()[0]) // a d record is not this file's
	w.Close()
	rows := parseCSV(t, path)
	if strings.Join(rows[0], ",") != strings.Join(ReportFields, ",") || len(rows) != 3 {
		t.Fatalf("rows = %v", rows)
	}
	if rows[1][10] != "abuse" || rows[1][15] != "198.51.100.7" || rows[2][6] != "5.1.1 (bad destination mailbox address)" {
		t.Errorf("rows = %v", rows)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"mixed families", Options{Records: []string{"d", "f"}}, "mix delivery"},
		{"unknown type", Options{Records: []string{"d", "z"}}, `unknown record type "z"`},
		{"empty", Options{Records: []string{}}, "no record types"},
		{"unknown field", Options{Fields: "*,dsnFoo"}, `unknown field "dsnFoo"`},
		{"remove type", Options{Fields: "*,!type"}, "cannot be removed"},
		{"bad header field", Options{Fields: "header_"}, `unknown field "header_"`},
	} {
		_, err := Open(filepath.Join(dir, tc.name), tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
	if err := Check(Options{Records: []string{"f", "rs"}, Fields: "*,!userAgent"}); err != nil {
		t.Errorf("Check of a good report file: %v", err)
	}
	if err := Check(Options{Records: []string{"b", "rb"}}); err == nil || strings.Contains(err.Error(), "acct: acct") {
		t.Errorf("Check of mixed families: %v", err)
	}
	_, err := Open(filepath.Join(dir, "x.csv"), Options{Fields: "nope"})
	if err == nil || err.Error() != `acct: `+filepath.Join(dir, "x.csv")+`: unknown field "nope"` {
		t.Errorf("Open error = %v", err)
	}
	if _, err := Open(filepath.Join(dir, "no", "such", "dir.csv"), Options{}); err == nil {
		t.Error("opened a file in a missing directory")
	}
}

func TestFieldList(t *testing.T) {
	short := []string{"type", "timeLogged", "orig", "rcpt", "dsnStatus"}
	for _, tc := range []struct{ spec, want string }{
		{"*", "type,timeLogged,orig,rcpt,dsnStatus"},
		{"rcpt,orig", "type,rcpt,orig"},
		{"rcpt,*", "type,rcpt,timeLogged,orig,dsnStatus"},
		{"*,!timeLogged,!dsnStatus", "type,orig,rcpt"},
		{"*,header_X-Job,queueId", "type,timeLogged,orig,rcpt,dsnStatus,header_X-Job,queueId"},
		{" orig , , rcpt ", "type,orig,rcpt"},
		{"!orig,orig", "type"},
		{"*,!orig,*,!rcpt", "type,timeLogged,dsnStatus"}, // two record-fields lines joined
	} {
		got, err := FieldList(short, tc.spec)
		if err != nil || strings.Join(got, ",") != tc.want {
			t.Errorf("FieldList(%q) = %v, %v; want %s", tc.spec, got, err, tc.want)
		}
	}
}

func TestCustomFieldsAndHeaders(t *testing.T) {
	path := filepath.Join(t.TempDir(), "acct.csv")
	opts := fixedOpts("d")
	opts.Fields = "rcpt,dsnStatus,header_X-Campaign"
	w, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	r := sampleRecords()[0]
	r.Headers = map[string]string{"x-campaign": "spring, 2016"}
	w.Write(r)
	w.Close()
	want := "type,rcpt,dsnStatus,header_X-Campaign\nd,user@example.com,2.0.0 (success),\"spring, 2016\"\n"
	if got := readFile(t, path); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestReopenAfterRename(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "acct.csv")
	w, err := Open(path, fixedOpts("d"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	rec := sampleRecords()[0]
	w.Write(rec)
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	w.Write(rec) // still goes to the renamed file until Reopen, as with logrotate
	if err := w.Reopen(); err != nil {
		t.Fatal(err)
	}
	w.Write(rec)
	if old := parseCSV(t, path+".1"); len(old) != 3 || old[0][0] != "type" {
		t.Errorf("rotated file rows = %d", len(old))
	}
	if cur := parseCSV(t, path); len(cur) != 2 || cur[0][0] != "type" || cur[1][0] != "d" {
		t.Errorf("new file rows = %v", cur)
	}
}

func TestForeignHeaderSetAside(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "acct.csv")
	os.WriteFile(path, []byte("type,orig\nd,a@b\n"), 0o640)
	w, err := Open(path, fixedOpts("d"))
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	aside := path + ".20160801180601"
	if got := readFile(t, aside); got != "type,orig\nd,a@b\n" {
		t.Errorf("set-aside file = %q", got)
	}
	if got := readFile(t, path); got != strings.Join(DeliveryFields, ",")+"\n" {
		t.Errorf("new file = %q", got)
	}
}

func TestSyncWrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "acct.csv")
	opts := fixedOpts("d")
	opts.Sync = true
	w, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Write(sampleRecords()[0]); err != nil {
		t.Fatal(err)
	}
	// Visible to a reader before Close: flushed per record.
	if rows := parseCSV(t, path); len(rows) != 2 {
		t.Errorf("rows before Close = %d", len(rows))
	}
}

func TestFileMode(t *testing.T) {
	dir := t.TempDir()
	for _, world := range []bool{false, true} {
		path := filepath.Join(dir, fmt.Sprint(world))
		w, err := Open(path, Options{WorldReadable: world})
		if err != nil {
			t.Fatal(err)
		}
		w.Close()
		st, _ := os.Stat(path)
		want := os.FileMode(0o640)
		if world {
			want = 0o644
		}
		if st.Mode().Perm() != want {
			t.Errorf("world=%v mode %v, want %v", world, st.Mode().Perm(), want)
		}
	}
}

func TestConcurrentWritesAndReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "acct.csv")
	w, err := Open(path, fixedOpts("d", "b"))
	if err != nil {
		t.Fatal(err)
	}
	const workers, each = 8, 200
	var wg sync.WaitGroup
	for g := 0; g < workers; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				r := *sampleRecords()[i%2]
				r.Rcpt = fmt.Sprintf("w%d-%d@example.com", g, i)
				if err := w.Write(&r); err != nil {
					t.Error(err)
					return
				}
			}
		}(g)
	}
	// Rotate while they write: no record may be lost or torn.
	for i := 0; i < 3; i++ {
		time.Sleep(time.Millisecond)
		os.Rename(path, fmt.Sprintf("%s.%d", path, i))
		if err := w.Reopen(); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	w.Close()
	seen := map[string]bool{}
	files, _ := filepath.Glob(path + "*")
	for _, f := range files {
		rows := parseCSV(t, f)
		if len(rows) == 0 || rows[0][0] != "type" {
			t.Fatalf("%s has no header", f)
		}
		for _, r := range rows[1:] {
			if len(r) != len(DeliveryFields) {
				t.Fatalf("torn row in %s: %v", f, r)
			}
			seen[r[7]] = true
		}
	}
	if len(seen) != workers*each {
		t.Errorf("%d distinct records over %d files, want %d", len(seen), len(files), workers*each)
	}
}

func FuzzFieldList(f *testing.F) {
	for _, s := range []string{"*", "*,!dsnMta", "rcpt,*,header_X-Job", "!type", ",,,", "header_A:B", "*,!*"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		got, err := FieldList(DeliveryFields, spec)
		if err != nil {
			return
		}
		if len(got) == 0 || got[0] != "type" {
			t.Fatalf("FieldList(%q) = %v: type must be first", spec, got)
		}
		seen := map[string]bool{}
		for _, f := range got {
			if seen[f] || !knownField(f) {
				t.Fatalf("FieldList(%q) = %v: duplicate or unknown %q", spec, got, f)
			}
			seen[f] = true
		}
	})
}

// FuzzRecordIsOneCSVLine checks that any value keeps a record on one line
// and reads back as the same number of fields.
func FuzzRecordIsOneCSVLine(f *testing.F) {
	for _, s := range []string{"a", "a,b", `"`, "x\ny", "\r", "smtp;550 5.1.1 <a@b>: \"no\"", "\x00\x7f"} {
		f.Add(s, s)
	}
	f.Fuzz(func(t *testing.T, rcpt, diag string) {
		var buf bytes.Buffer
		cw := csv.NewWriter(&buf)
		c := &fmtCtx{loc: time.UTC, now: time.Unix(0, 0)}
		r := &Record{Type: "b", Rcpt: rcpt, DsnDiag: diag}
		row := make([]string, len(DeliveryFields))
		for i, name := range DeliveryFields {
			row[i] = clean(getter(name)(r, c))
		}
		cw.Write(row)
		cw.Flush()
		if n := strings.Count(buf.String(), "\n"); n != 1 {
			t.Fatalf("%d lines: %q", n, buf.String())
		}
		back, err := csv.NewReader(&buf).Read()
		if err != nil || len(back) != len(DeliveryFields) {
			t.Fatalf("read back %v, %v", back, err)
		}
	})
}
