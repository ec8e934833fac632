package vmta

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// ListenerSelf returns a Destination.IsSelf for an MTA listening on
// listeners: dialling ip:port reaches us when a listener has that port and
// that address, or an unspecified address (0/0:PORT) and ip is one of
// this host's (any 127/8 or ::1 counts, as the kernel delivers those
// locally).
func ListenerSelf(listeners []netip.AddrPort) func(ip netip.Addr, port int) bool {
	ls := append([]netip.AddrPort(nil), listeners...)
	return func(ip netip.Addr, port int) bool {
		ip = ip.Unmap()
		for _, l := range ls {
			if int(l.Port()) != port {
				continue
			}
			a := l.Addr().Unmap()
			if a.IsValid() && !a.IsUnspecified() {
				if a == ip {
					return true
				}
				continue
			}
			if ip.IsLoopback() || localAddrs.has(ip) {
				return true
			}
		}
		return false
	}
}

// localAddrs caches the host's interface addresses; they change rarely,
// and reading them costs a netlink round trip.
var localAddrs = &addrCache{}

type addrCache struct {
	mu    sync.Mutex
	at    time.Time
	addrs map[netip.Addr]bool
}

func (c *addrCache) has(ip netip.Addr) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.addrs == nil || time.Since(c.at) > time.Minute {
		c.at = time.Now()
		c.addrs = map[netip.Addr]bool{}
		if as, err := net.InterfaceAddrs(); err == nil {
			for _, a := range as {
				if p, err := netip.ParsePrefix(a.String()); err == nil {
					c.addrs[p.Addr().Unmap()] = true
				}
			}
		}
	}
	return c.addrs[ip]
}
