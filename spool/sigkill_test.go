package spool

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/qid"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv("SPOOL_TEST_CHILD"); dir != "" {
		killChild(dir)
		return
	}
	os.Exit(m.Run())
}

func killContent(id string) []byte {
	line := []byte("Subject: " + id + "\r\n")
	n := 200 + int(crc32.ChecksumIEEE([]byte(id))%3000)
	return bytes.Repeat(line, 1+n/len(line))[:n]
}

// killChild appends from several goroutines and prints each acknowledged
// operation; the parent SIGKILLs it at a random moment.
func killChild(dir string) {
	s, err := Open(dir, Options{SegmentSize: 1 << 20, Reserve: 1})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var out sync.Mutex
	say := func(f string, a ...any) {
		out.Lock()
		fmt.Printf(f+"\n", a...)
		out.Unlock()
	}
	say("ready")
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				id := qid.New(time.Now())
				m := &Message{ID: id, Arrival: time.Now(), Sender: "s@example.org", VMTA: "v",
					Recipients: []Recipient{{Addr: "a@x.example"}, {Addr: "b@y.example"}}, Content: killContent(id)}
				if err := s.Submit(m); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(3)
				}
				say("S %s", id)
				if rand.Intn(2) == 0 {
					say("T %s", id) // finishing: may be durable before "D"
					var b Batch
					b.Delivered(id, 0, "250 ok")
					b.Bounced(id, 1, "550 no")
					if err := s.Commit(&b); err != nil {
						fmt.Fprintln(os.Stderr, err)
						os.Exit(3)
					}
					say("D %s", id)
				}
			}
		}()
	}
	wg.Wait()
}

// TestSIGKILL kills a real child process 20 times while it appends; every
// operation it reported as acknowledged must be there after each restart.
func TestSIGKILL(t *testing.T) {
	dir := t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	submitted := make(map[string]bool) // id -> finished
	tried := make(map[string]bool)     // finishing ops sent, maybe durable
	for kill := 0; kill < 20; kill++ {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), "SPOOL_TEST_CHILD="+dir)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1024)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		if l := <-lines; l != "ready" {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("child: %q %s", l, stderr.String())
		}
		timer := time.After(time.Duration(20+rand.Intn(150)) * time.Millisecond)
	read:
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					break read
				}
				id := l[2:]
				if l[0] == 'T' {
					tried[id] = true
					continue
				}
				submitted[id] = submitted[id] || l[0] == 'D'
			case <-timer:
				cmd.Process.Signal(syscall.SIGKILL)
				timer = nil
			}
		}
		err = cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("child ended with %v, not by SIGKILL: %s", err, stderr.String())
		}
		s, err := Open(dir, Options{SegmentSize: 1 << 20, Reserve: 1, Logf: t.Logf})
		if err != nil {
			t.Fatalf("kill %d: reopen: %v", kill, err)
		}
		<-s.Recovered()
		for id, done := range submitted {
			_, _, err := s.Envelope(id)
			if done {
				if !errors.Is(err, ErrNotFound) {
					t.Fatalf("kill %d: finished %s back: %v", kill, id, err)
				}
				continue
			}
			if err != nil && tried[id] && errors.Is(err, ErrNotFound) {
				submitted[id] = true // finished by then-unacknowledged records
				continue
			}
			if err != nil {
				t.Fatalf("kill %d: acknowledged %s lost: %v", kill, id, err)
			}
			if got := mustContent(t, s, id); !bytes.Equal(got, killContent(id)) {
				t.Fatalf("kill %d: %s content differs", kill, id)
			}
		}
		s.Close()
	}
	n := 0
	for _, d := range submitted {
		if !d {
			n++
		}
	}
	t.Logf("%d acknowledged submissions over 20 kills, %d still queued", len(submitted), n)
	if len(submitted) == 0 {
		t.Fatal("child acknowledged nothing")
	}
}
