package spool

import (
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"sort"
	"strings"
	"sync"
)

// memFS is an in-memory FS that knows what a power cut would keep: file
// contents as of each file's last completed Datasync, and directory
// entries as of the last SyncDir. Crash() returns that image (plus, at
// random, some torn pieces of writes that were never synced).
type memFS struct {
	mu       sync.Mutex
	files    map[string]*memFile // live namespace
	durable  map[string]*memFile // namespace as of the last SyncDir
	locks    map[string]bool
	capacity int64 // 0 = unlimited
	used     int64
	rng      *rand.Rand
	torn     bool // Crash keeps random pieces of unsynced writes

	// failSync makes the next Datasync calls fail while it returns true.
	failSync func(name string) bool
	// crashAt, when > 0, counts down file operations; at zero the image is
	// taken into crashImg and crashed is set.
	crashAt  int
	crashed  bool
	crashImg *memFS
}

type memFile struct {
	fs      *memFS
	name    string
	data    []byte // live contents
	synced  []byte // contents as of the last Datasync
	pending []pwrite
	mapped  bool
}

type pwrite struct {
	off int64
	b   []byte
}

func newMemFS(seed int64) *memFS {
	return &memFS{
		files:   make(map[string]*memFile),
		durable: make(map[string]*memFile),
		locks:   make(map[string]bool),
		rng:     rand.New(rand.NewSource(seed)),
	}
}

// tick counts one operation toward a scheduled crash. Called with mu held.
func (m *memFS) tick() {
	if m.crashAt > 0 {
		m.crashAt--
		if m.crashAt == 0 {
			m.crashImg = m.crashLocked()
			m.crashed = true
		}
	}
}

func (m *memFS) Crashed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.crashed
}

// Crash returns the disk as a power cut now would leave it.
func (m *memFS) Crash() *memFS {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.crashLocked()
}

func (m *memFS) crashLocked() *memFS {
	n := newMemFS(m.rng.Int63())
	n.capacity = m.capacity
	for name, f := range m.durable {
		c := make([]byte, len(f.synced))
		copy(c, f.synced)
		if m.torn && len(f.pending) > 0 {
			// Some unsynced writes may have reached the platter, the last
			// of them only in part.
			k := m.rng.Intn(len(f.pending) + 1)
			for i := 0; i < k; i++ {
				w := f.pending[i]
				b := w.b
				if i == k-1 {
					b = b[:m.rng.Intn(len(b)+1)]
				}
				if w.off+int64(len(b)) <= int64(len(c)) {
					copy(c[w.off:], b)
				}
			}
		}
		nf := &memFile{fs: n, name: name, data: c, synced: append([]byte(nil), c...)}
		n.files[name] = nf
		n.durable[name] = nf
		n.used += int64(len(c))
	}
	return n
}

func (m *memFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tick()
	f, ok := m.files[name]
	if ok && flag&os.O_EXCL != 0 {
		return nil, &os.PathError{Op: "open", Path: name, Err: os.ErrExist}
	}
	if !ok {
		if flag&os.O_CREATE == 0 {
			return nil, &os.PathError{Op: "open", Path: name, Err: os.ErrNotExist}
		}
		f = &memFile{fs: m, name: name}
		m.files[name] = f
	}
	return &memHandle{f: f}, nil
}

func (m *memFS) Remove(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tick()
	if _, ok := m.files[name]; !ok {
		return &os.PathError{Op: "remove", Path: name, Err: os.ErrNotExist}
	}
	delete(m.files, name)
	m.recount()
	return nil
}

func (m *memFS) Rename(oldpath, newpath string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tick()
	f, ok := m.files[oldpath]
	if !ok {
		return &os.PathError{Op: "rename", Path: oldpath, Err: os.ErrNotExist}
	}
	delete(m.files, oldpath)
	m.files[newpath] = f
	m.recount()
	return nil
}

// recount sets used to the data of every file a power cut could leave:
// those in the live namespace and those in the durable one, each once
// (a renamed file is in both, under two names). Called with mu held.
func (m *memFS) recount() {
	seen := make(map[*memFile]bool, len(m.files))
	m.used = 0
	for _, ns := range []map[string]*memFile{m.files, m.durable} {
		for _, f := range ns {
			if !seen[f] {
				seen[f] = true
				m.used += int64(len(f.data))
			}
		}
	}
}

// spareFiles lists the segment files whose header is all zeroes: spares
// and readied reused files, never activated. Called with mu held.
func (m *memFS) spareFiles() []string {
	var out []string
	for name, f := range m.files {
		if strings.HasSuffix(name, segSuffix) && allZero(f.data[:headerSize]) {
			out = append(out, name)
		}
	}
	return out
}

func (m *memFS) ReadDir(dir string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for name := range m.files {
		if strings.HasPrefix(name, dir+"/") {
			out = append(out, name[len(dir)+1:])
		}
	}
	sort.Strings(out)
	return out, nil
}

func (m *memFS) SyncDir(dir string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tick()
	m.durable = make(map[string]*memFile, len(m.files))
	for name, f := range m.files {
		m.durable[name] = f
	}
	m.recount()
	return nil
}

func (m *memFS) MkdirAll(string, os.FileMode) error { return nil }

type memLock struct {
	m   *memFS
	dir string
}

func (l memLock) Close() error {
	l.m.mu.Lock()
	delete(l.m.locks, l.dir)
	l.m.mu.Unlock()
	return nil
}

func (m *memFS) Lock(dir string) (io.Closer, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.locks[dir] {
		return nil, ErrLocked
	}
	m.locks[dir] = true
	return memLock{m, dir}, nil
}

func (m *memFS) Avail(string) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.capacity == 0 {
		return 1 << 40, nil
	}
	return m.capacity - m.used, nil
}

var errMemNoSpace = fmt.Errorf("memfs: %w", ErrNoSpace)

type memHandle struct{ f *memFile }

func (h *memHandle) ReadAt(p []byte, off int64) (int, error) {
	m := h.f.fs
	m.mu.Lock()
	defer m.mu.Unlock()
	if off >= int64(len(h.f.data)) {
		return 0, io.EOF
	}
	n := copy(p, h.f.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (h *memHandle) WriteAt(p []byte, off int64) (int, error) {
	m := h.f.fs
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tick()
	if off+int64(len(p)) > int64(len(h.f.data)) {
		if h.f.mapped {
			return 0, errors.New("memfs: write beyond a mapped file's size")
		}
		grow := off + int64(len(p)) - int64(len(h.f.data))
		h.f.data = append(h.f.data, make([]byte, grow)...)
		m.used += grow
	}
	copy(h.f.data[off:], p)
	h.f.pending = append(h.f.pending, pwrite{off, append([]byte(nil), p...)})
	return len(p), nil
}

func (h *memHandle) Close() error { return nil }

func (h *memHandle) Datasync() error {
	m := h.f.fs
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tick()
	if m.failSync != nil && m.failSync(h.f.name) {
		// Like Linux after a writeback error: the pending writes are
		// lost for good, and only this call reports it.
		h.f.pending = nil
		return errors.New("memfs: injected EIO")
	}
	if len(h.f.synced) < len(h.f.data) {
		h.f.synced = append(h.f.synced, make([]byte, len(h.f.data)-len(h.f.synced))...)
	}
	for _, w := range h.f.pending {
		copy(h.f.synced[w.off:], w.b)
	}
	h.f.pending = nil
	return nil
}

func (h *memHandle) Allocate(size int64) error {
	m := h.f.fs
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tick()
	grow := size - int64(len(h.f.data))
	if grow <= 0 {
		return nil
	}
	if m.capacity > 0 && m.used+grow > m.capacity {
		return errMemNoSpace
	}
	h.f.data = append(h.f.data, make([]byte, grow)...)
	h.f.synced = append(h.f.synced, make([]byte, size-int64(len(h.f.synced)))...)
	m.used += grow
	return nil
}

func (h *memHandle) Map(size int64) ([]byte, error) {
	m := h.f.fs
	m.mu.Lock()
	defer m.mu.Unlock()
	if size > int64(len(h.f.data)) {
		return nil, errors.New("memfs: map beyond file size")
	}
	h.f.mapped = true
	return h.f.data[:size:size], nil
}

func (h *memHandle) Unmap([]byte) error { return nil }
func (h *memHandle) DropCache() error   { return nil }
func (h *memHandle) Size() int64 {
	m := h.f.fs
	m.mu.Lock()
	defer m.mu.Unlock()
	return int64(len(h.f.data))
}
