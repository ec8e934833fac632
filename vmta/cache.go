package vmta

import (
	"net/netip"
	"sync"
	"time"
)

// connKey names the connections one destination host can reuse: the same
// source IPs (the sending identity), host, port, HELO name and login. Keying by MX
// host rather than by recipient domain lets domains sharing MX hosts share
// connections, as PowerMTA's MX rollup does.
type connKey struct {
	src4, src6 netip.Addr
	host       string
	port       int
	helo       string
	user       string // AUTH user name; "" without login
}

// connCache holds idle sessions. A session is in the cache or owned by one
// Deliver call, never both.
type connCache struct {
	mu     sync.Mutex
	idle   map[connKey][]*conn
	n      int
	max    int
	closed bool
	stop   chan struct{}
	done   chan struct{}
}

func newConnCache(max int, sweep time.Duration) *connCache {
	cc := &connCache{idle: make(map[connKey][]*conn), max: max,
		stop: make(chan struct{}), done: make(chan struct{})}
	go cc.sweeper(sweep)
	return cc
}

// get returns a live idle session for k, most recently used first (it is
// the least likely to have been timed out by the server), or nil.
// requireVerified asks for a session whose TLS certificate was verified.
func (cc *connCache) get(k connKey, requireVerified bool) *conn {
	for {
		cc.mu.Lock()
		list := cc.idle[k]
		var c *conn
		for i := len(list) - 1; i >= 0; i-- {
			if !requireVerified || list[i].verified {
				c = list[i]
				list = append(list[:i], list[i+1:]...)
				break
			}
		}
		if c != nil {
			cc.n--
			if len(list) == 0 {
				delete(cc.idle, k)
			} else {
				cc.idle[k] = list
			}
		}
		cc.mu.Unlock()
		if c == nil {
			return nil
		}
		if time.Since(c.idleAt) < c.idleFor && c.alive() {
			return c
		}
		c.broken = true
		c.quit()
	}
}

// put caches c, or closes it when the cache is full or closed.
func (cc *connCache) put(c *conn) {
	c.idleAt = time.Now()
	cc.mu.Lock()
	if cc.closed || cc.n >= cc.max {
		cc.mu.Unlock()
		c.quit()
		return
	}
	cc.idle[c.key] = append(cc.idle[c.key], c)
	cc.n++
	cc.mu.Unlock()
}

// sweeper closes sessions idle longer than their idle timeout.
func (cc *connCache) sweeper(every time.Duration) {
	defer close(cc.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-cc.stop:
			return
		case now := <-t.C:
			var expired []*conn
			cc.mu.Lock()
			for k, list := range cc.idle {
				keep := list[:0]
				for _, c := range list {
					if now.Sub(c.idleAt) >= c.idleFor {
						expired = append(expired, c)
					} else {
						keep = append(keep, c)
					}
				}
				cc.n -= len(list) - len(keep)
				if len(keep) == 0 {
					delete(cc.idle, k)
				} else {
					cc.idle[k] = keep
				}
			}
			cc.mu.Unlock()
			for _, c := range expired {
				c.quit()
			}
		}
	}
}

// idleCount reports how many sessions are cached.
func (cc *connCache) idleCount() int {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.n
}

// close quits every cached session and stops the sweeper.
func (cc *connCache) close() {
	cc.mu.Lock()
	if cc.closed {
		cc.mu.Unlock()
		return
	}
	cc.closed = true
	var all []*conn
	for _, list := range cc.idle {
		all = append(all, list...)
	}
	clear(cc.idle)
	cc.n = 0
	cc.mu.Unlock()
	close(cc.stop)
	<-cc.done
	var wg sync.WaitGroup
	for _, c := range all {
		wg.Add(1)
		go func() { defer wg.Done(); c.quit() }()
	}
	wg.Wait()
}
