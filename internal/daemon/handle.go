package daemon

import "net"

// handleControl serves one control-socket connection.
func (d *Daemon) handleControl(conn *net.UnixConn) {
}
