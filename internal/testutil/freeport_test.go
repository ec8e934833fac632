package testutil

import (
	"fmt"
	"net"
	"testing"
)

func TestFreePort(t *testing.T) {
	seen := map[int]bool{}
	for i := 0; i < 5; i++ {
		p := FreePort(t)
		if p <= 1024 || p > 65535 {
			t.Fatalf("port %d out of range", p)
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			t.Fatalf("port %d not bindable: %v", p, err)
		}
		ln.Close()
		seen[p] = true
	}
	if len(seen) < 2 {
		t.Errorf("FreePort returned the same port every time: %v", seen)
	}
}
