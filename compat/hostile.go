package compat

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// errVanished: the file went away between listing and opening (another
// scan took it, or its writer renamed it).
var errVanished = errors.New("file vanished")

// badFile is a file that must be set aside, with the reason.
type badFile struct{ reason string }

func (b *badFile) Error() string { return b.reason }

// openHostile opens a file someone else put in a directory we read (the
// maildrop, a pickup directory) without trusting it: no symlinks followed,
// no devices or FIFOs (O_NONBLOCK keeps a FIFO from blocking the open),
// regular files with one link only (a hard link would mail a file its
// writer could not read), at most limit bytes. A *badFile error means set
// it aside; errVanished means nothing to do; any other error is
// temporary (try again at the next scan).
func openHostile(path string, limit int64) (*os.File, *unix.Stat_t, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		switch {
		case errors.Is(err, unix.ENOENT):
			return nil, nil, errVanished
		case errors.Is(err, unix.ELOOP), errors.Is(err, unix.ENXIO):
			return nil, nil, &badFile{"not a regular file"}
		case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
			return nil, nil, &badFile{fmt.Sprintf("cannot open: %v", err)}
		}
		return nil, nil, fmt.Errorf("open: %w", err)
	}
	f := os.NewFile(uintptr(fd), path)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("stat: %w", err)
	}
	var bad string
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		bad = "not a regular file"
	case st.Nlink != 1:
		bad = fmt.Sprintf("file has %d links", st.Nlink)
	case st.Size > limit:
		bad = fmt.Sprintf("file too big (%d bytes, limit %d)", st.Size, limit)
	}
	if bad != "" {
		f.Close()
		return nil, nil, &badFile{bad}
	}
	return f, &st, nil
}
