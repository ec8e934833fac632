package daemon

import (
	"fmt"
	"os"
	"os/user"
	"strconv"
	"syscall"
)

// dropPrivileges gives up root for good once the listeners are bound (see
// docs/privilege.md). A daemon started as the target user, or as a user
// other than root, keeps its identity. run-as-user root is honoured (tests,
// containers that isolate otherwise) but the log says so.
//
// Files opened before the drop (the log and accounting files) are handed
// to the user first, or a reopen after logrotate would be refused.
func dropPrivileges(name string, ownFiles ...string) error {
	if os.Geteuid() != 0 || name == "root" {
		return nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return fmt.Errorf("run-as-user %s: %w (create it with `useradd --system %s`, or set run-as-user)", name, err, name)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return fmt.Errorf("run-as-user %s: uid %q: %w", name, u.Uid, err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return fmt.Errorf("run-as-user %s: gid %q: %w", name, u.Gid, err)
	}
	if uid == 0 {
		return fmt.Errorf("run-as-user %s has uid 0", name)
	}
	for _, f := range ownFiles {
		if f == "" || f == "-" {
			continue
		}
		if err := os.Chown(f, uid, gid); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("run-as-user %s: chown %s: %w", name, f, err)
		}
	}
	// Go applies these to every thread of the process (Go >= 1.16).
	if err := syscall.Setgroups([]int{gid}); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setgid(gid); err != nil {
		return fmt.Errorf("setgid %d: %w", gid, err)
	}
	if err := syscall.Setuid(uid); err != nil {
		return fmt.Errorf("setuid %d: %w", uid, err)
	}
	if syscall.Setuid(0) == nil {
		return fmt.Errorf("privilege drop to %s did not stick", name)
	}
	return nil
}
