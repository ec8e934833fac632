package acct

import (
	"bufio"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// Options configure one accounting file.
type Options struct {
	// Records are the record types written; the rest are skipped. nil
	// means d,b (PowerMTA's default). All must be of one family: delivery
	// (d, b, t, tq, r) or report (f, rb, rs), since a file has one header.
	Records []string
	// Fields is a record-fields spec for the whole file, e.g.
	// "*,!dlvEsmtpAvailable,header_X-Campaign"; "" means the family's
	// default list.
	Fields string
	// WorldReadable creates the file 0644 instead of 0640.
	WorldReadable bool
	// Sync fsyncs after each Write or WriteBatch. Without it a record is
	// in the kernel when Write returns, so a daemon crash loses nothing
	// already returned, but a machine crash may.
	Sync bool
	// Location of the timestamps; nil means time.Local.
	Location *time.Location
	// Now is the clock for an empty TimeLogged; nil means time.Now.
	Now func() time.Time
}

// Writer appends records to one accounting file. It is safe for use by
// many goroutines.
type Writer struct {
	path   string
	opts   Options
	want   map[string]bool
	fields []string
	get    []func(*Record, *fmtCtx) string
	header string

	mu  sync.Mutex
	f   *os.File
	bw  *bufio.Writer
	cw  *csv.Writer
	row []string
}

// Open opens (creating if needed) an accounting file for appending. A new
// or empty file gets the header line at once. An existing file whose
// header differs from this configuration is renamed aside to
// PATH.YYYYmmddHHMMSS, so one file never mixes two layouts.
func Open(path string, opts Options) (*Writer, error) {
	want, fields, err := plan(opts)
	if err != nil {
		return nil, fmt.Errorf("acct: %s: %w", path, err)
	}
	w := &Writer{path: path, opts: opts, want: want, fields: fields}
	for _, f := range fields {
		w.get = append(w.get, getter(f))
	}
	w.header = strings.Join(fields, ",")
	w.row = make([]string, len(fields))
	if w.opts.Location == nil {
		w.opts.Location = time.Local
	}
	if w.opts.Now == nil {
		w.opts.Now = time.Now
	}
	if err := w.open(); err != nil {
		return nil, err
	}
	return w, nil
}

// Check validates options without opening anything, so a config checker
// (sluiced --check) can report a bad <acct-file> block with its line.
func Check(opts Options) error {
	_, _, err := plan(opts)
	return err
}

// plan resolves the record types and the field list of a file.
func plan(opts Options) (map[string]bool, []string, error) {
	recs := opts.Records
	if recs == nil {
		recs = []string{TypeDelivered, TypeBounced}
	}
	if len(recs) == 0 {
		return nil, nil, fmt.Errorf("no record types")
	}
	want := map[string]bool{}
	var defaults []string
	fam := ""
	for _, t := range recs {
		if !ValidType(t) {
			return nil, nil, fmt.Errorf("unknown record type %q", t)
		}
		if fam != "" && familyName[t] != fam {
			return nil, nil, fmt.Errorf("records %s mix delivery (d,b,t,tq,r) and report (f,rb,rs) types; give each family its own <acct-file>",
				strings.Join(recs, ","))
		}
		fam, defaults = familyName[t], family[t]
		want[t] = true
	}
	spec := opts.Fields
	if spec == "" {
		spec = "*"
	}
	fields, err := fieldList(defaults, spec)
	if err != nil {
		return nil, nil, err
	}
	return want, fields, nil
}

// Path is the file's path.
func (w *Writer) Path() string { return w.path }

// Fields is the file's field list, as in its header.
func (w *Writer) Fields() []string { return append([]string(nil), w.fields...) }

// Wants reports whether records of type t go to this file.
func (w *Writer) Wants(t string) bool { return w.want[t] }

func (w *Writer) mode() os.FileMode {
	if w.opts.WorldReadable {
		return 0o644
	}
	return 0o640
}

// open opens w.path and writes the header if the file is empty. Caller
// holds w.mu (or has the only reference).
func (w *Writer) open() error {
	if err := w.setAsideIfForeign(); err != nil {
		return err
	}
	f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, w.mode())
	if err != nil {
		return fmt.Errorf("acct: open %s: %w", w.path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("acct: stat %s: %w", w.path, err)
	}
	w.f = f
	w.bw = bufio.NewWriterSize(f, 64*1024)
	w.cw = csv.NewWriter(w.bw)
	if st.Size() == 0 {
		// The umask may have narrowed the mode; the operator asked for it.
		if err := f.Chmod(w.mode()); err != nil {
			f.Close()
			return fmt.Errorf("acct: chmod %s: %w", w.path, err)
		}
		if err := w.cw.Write(w.fields); err != nil {
			f.Close()
			return fmt.Errorf("acct: header %s: %w", w.path, err)
		}
		if err := w.flush(); err != nil {
			f.Close()
			return err
		}
	}
	return nil
}

// setAsideIfForeign renames an existing file whose header is not ours.
func (w *Writer) setAsideIfForeign() error {
	f, err := os.Open(w.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("acct: open %s: %w", w.path, err)
	}
	line, err := bufio.NewReader(f).ReadString('\n')
	f.Close()
	if err == io.EOF && line == "" {
		return nil // empty: the header will be written
	}
	if strings.TrimRight(line, "\r\n") == w.header {
		return nil
	}
	aside := w.path + "." + w.opts.Now().Format("20060102150405")
	if err := os.Rename(w.path, aside); err != nil {
		return fmt.Errorf("acct: %s has another header; set aside: %w", w.path, err)
	}
	return nil
}

func (w *Writer) flush() error {
	w.cw.Flush()
	if err := w.cw.Error(); err != nil {
		return fmt.Errorf("acct: write %s: %w", w.path, err)
	}
	if err := w.bw.Flush(); err != nil {
		return fmt.Errorf("acct: write %s: %w", w.path, err)
	}
	if w.opts.Sync {
		if err := w.f.Sync(); err != nil {
			return fmt.Errorf("acct: sync %s: %w", w.path, err)
		}
	}
	return nil
}

// Write appends one record if its type is wanted, and flushes it to the
// file before returning.
func (w *Writer) Write(r *Record) error {
	return w.WriteBatch([]*Record{r})
}

// WriteBatch appends the wanted records and flushes once.
func (w *Writer) WriteBatch(rs []*Record) error {
	for _, r := range rs {
		if !ValidType(r.Type) {
			return fmt.Errorf("acct: unknown record type %q", r.Type)
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return fmt.Errorf("acct: %s is closed", w.path)
	}
	c := &fmtCtx{loc: w.opts.Location, now: w.opts.Now()}
	n := 0
	for _, r := range rs {
		if !w.want[r.Type] {
			continue
		}
		for i, g := range w.get {
			w.row[i] = clean(g(r, c))
		}
		if err := w.cw.Write(w.row); err != nil {
			return fmt.Errorf("acct: write %s: %w", w.path, err)
		}
		n++
	}
	if n == 0 {
		return nil
	}
	return w.flush()
}

// Reopen closes and reopens the path, for log rotation: after logrotate
// renamed the file, new records go to a new file with its own header.
func (w *Writer) Reopen() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f != nil {
		if err := w.closeLocked(); err != nil {
			return err
		}
	}
	return w.open()
}

// Close flushes and closes the file.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	return w.closeLocked()
}

func (w *Writer) closeLocked() error {
	ferr := w.flush()
	cerr := w.f.Close()
	w.f = nil
	if ferr != nil {
		return ferr
	}
	if cerr != nil {
		return fmt.Errorf("acct: close %s: %w", w.path, cerr)
	}
	return nil
}
