package spool

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// OSFS is the real file system.
type OSFS struct{}

type osFile struct{ *os.File }

func (OSFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (OSFS) Remove(name string) error { return os.Remove(name) }

func (OSFS) Rename(oldpath, newpath string) error { return os.Rename(oldpath, newpath) }

func (OSFS) ReadDir(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.Name()
	}
	return names, nil
}

func (OSFS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

func (OSFS) MkdirAll(dir string, perm os.FileMode) error { return os.MkdirAll(dir, perm) }

type flockCloser struct{ f *os.File }

func (l flockCloser) Close() error { return l.f.Close() } // closing drops the flock

func (OSFS) Lock(dir string) (io.Closer, error) {
	f, err := os.OpenFile(dir+"/lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, ErrLocked
		}
		return nil, fmt.Errorf("flock: %w", err)
	}
	return flockCloser{f}, nil
}

func (OSFS) Avail(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

func (f osFile) Datasync() error { return unix.Fdatasync(int(f.Fd())) }

func (f osFile) Allocate(size int64) error {
	return unix.Fallocate(int(f.Fd()), 0, 0, size)
}

func (f osFile) Map(size int64) ([]byte, error) {
	return unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
}

func (f osFile) Unmap(b []byte) error { return unix.Munmap(b) }

func (f osFile) DropCache() error {
	return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}

// zeroFiller is implemented by files that benefit from being overwritten
// once before use: on ext4 and XFS a fallocated extent is "unwritten", and
// the first write into it costs a metadata journal commit at fdatasync.
type zeroFiller interface{ zeroFill(size int64) error }

// zeroFill writes the zeroes a megabyte at a time and waits for each to
// reach the device before writing the next. Written at once, 64 MiB queued
// ahead of the committer's fdatasyncs and stalled appends beside it for
// 50-70 ms (BenchmarkAppendDuringRoll).
func (f osFile) zeroFill(size int64) error {
	const step = 1 << 20
	buf := make([]byte, step)
	for off := int64(0); off < size; off += step {
		n := min(step, size-off)
		if _, err := f.WriteAt(buf[:n], off); err != nil {
			return err
		}
		err := unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
		if err != nil {
			return fmt.Errorf("sync_file_range: %w", err)
		}
	}
	// sync_file_range neither flushes the device's cache nor commits the
	// extents' change from unwritten to written: fdatasync does both.
	return unix.Fdatasync(int(f.Fd()))
}

func isNoSpace(err error) bool {
	return errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) || errors.Is(err, ErrNoSpace)
}
