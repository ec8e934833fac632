package spool

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"reflect"
	"strings"
	"testing"
)

func testID(s string) (id [idLen]byte) { copy(id[:], s); return }

var sampleMsg = testMsg(2, 100)

// withOrigin is sampleMsg with an origin and the verify mark, so both
// encodings of each are covered.
var withOrigin = func() *Message {
	m := *sampleMsg
	m.Origin = Origin{Type: "smtp", Helo: "client.example", Addr: "192.0.2.7", AuthUser: "alice"}
	m.Verify = true
	return &m
}()

func sampleRecords() map[string][]byte {
	m := sampleMsg
	id := testID(m.ID)
	st := []rstate{{status: uint8(Deferred), attempts: 3, next: 12345, reason: []byte("451 4.7.1 later")}, {status: uint8(Delivered), attempts: 1}}
	return map[string][]byte{
		"message":     appendMessage(nil, kMessage, id, m, false, nil, m.Content),
		"copy":        appendMessage(nil, kCopy, id, m, true, st, m.Content),
		"origin":      appendMessage(nil, kMessage, id, withOrigin, false, nil, m.Content),
		"origin-copy": appendMessage(nil, kCopy, id, withOrigin, true, st, m.Content),
		"outcome":     appendOutcome(nil, id, 1, Bounced, 2, 0, "550 5.1.1 no such user"),
		"attempt":     appendAttempt(nil, id, 0, 4, 99),
		"hold":        appendSimple(nil, kHold, id),
		"release":     appendSimple(nil, kRelease, id),
		"done":        appendDone(nil, id, 3, 9),
		"snapshot":    appendSnapshot(nil, id, false, st),
	}
}

func TestRecordRoundTrip(t *testing.T) {
	m := sampleMsg
	for name, b := range sampleRecords() {
		t.Run(name, func(t *testing.T) {
			body, n, err := frame(b, 0)
			if err != nil || n != len(b) {
				t.Fatalf("frame: n=%d err=%v", n, err)
			}
			var r rec
			if err := r.parse(body); err != nil {
				t.Fatal(err)
			}
			if string(r.id[:]) != m.ID {
				t.Fatalf("id %q", r.id[:])
			}
			switch r.kind {
			case kMessage, kCopy:
				got := r.message()
				got.ID, got.Content = m.ID, m.Content
				want := *m
				want.ID = got.ID
				if !reflect.DeepEqual(got.Recipients, want.Recipients) || got.Sender != want.Sender || got.VMTA != want.VMTA ||
					got.Ret != want.Ret || got.EnvID != want.EnvID || got.Body != want.Body || got.JobID != want.JobID || !got.Arrival.Equal(want.Arrival) {
					t.Fatalf("envelope: got %+v want %+v", got, want)
				}
				if wantOrigin := strings.HasPrefix(name, "origin"); (got.Origin == withOrigin.Origin) != wantOrigin || (!wantOrigin && got.Origin != (Origin{})) {
					t.Fatalf("origin %+v", got.Origin)
				}
				if got.Verify != strings.HasPrefix(name, "origin") {
					t.Fatalf("verify mark %v", got.Verify)
				}
				if !bytes.Equal(r.content, m.Content) || !bytes.Equal(body[r.contentOff:r.contentOff+len(r.content)], m.Content) {
					t.Fatal("content")
				}
				if r.kind == kCopy && name != "origin-copy" && (!r.held || len(r.states) != 2 || string(r.states[0].reason) != "451 4.7.1 later" || r.states[0].attempts != 3) {
					t.Fatalf("copy state %+v", r.states)
				}
			case kOutcome:
				if r.rcpt != 1 || r.st.status != uint8(Bounced) || r.st.attempts != 2 || string(r.st.reason) != "550 5.1.1 no such user" {
					t.Fatalf("outcome %+v", r.st)
				}
			case kAttempt:
				if r.rcpt != 0 || r.st.attempts != 4 || r.st.next != 99 {
					t.Fatalf("attempt %+v", r.st)
				}
			case kDone:
				if r.first != 3 || r.last != 9 {
					t.Fatalf("done %d %d", r.first, r.last)
				}
			case kSnapshot:
				if r.held || len(r.states) != 2 || r.states[1].status != uint8(Delivered) {
					t.Fatalf("snapshot %+v", r.states)
				}
			}
		})
	}
}

func TestFrameErrors(t *testing.T) {
	good := sampleRecords()["outcome"]
	flip := func(i int) []byte { b := append([]byte(nil), good...); b[i] ^= 0x40; return b }
	long := append([]byte(nil), good...)
	binary.LittleEndian.PutUint32(long, 1<<30)
	tests := []struct {
		name    string
		in      []byte
		wantEnd bool // clean end of data
		wantErr bool
	}{
		{"zeroes", make([]byte, 64), true, false},
		{"short zeroes", make([]byte, 5), true, false},
		{"empty", nil, true, false},
		{"cut header", good[:5], false, true},
		{"cut body", good[:len(good)-1], false, true},
		{"body bit flip", flip(len(good) - 3), false, true},
		{"crc bit flip", flip(5), false, true},
		{"length too long", long, false, true},
		{"good", good, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, n, err := frame(tc.in, 0)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if tc.wantEnd != (n == 0 && err == nil) {
				t.Fatalf("n = %d, want end %v", n, tc.wantEnd)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	id := testID("4jcjLm0000zVV3lf")
	bad := map[string][]byte{
		"unknown kind":   {99},
		"empty":          {},
		"short id":       {kHold, 'a', 'b'},
		"trailing bytes": append(appendSimple(nil, kHold, id)[frameHeader:], 0),
		"bad status":     appendOutcome(nil, id, 0, Status(9), 1, 0, "")[frameHeader:],
		"zero rcpts":     appendSnapshot(nil, id, false, nil)[frameHeader:],
	}
	for name, body := range bad {
		var r rec
		if err := r.parse(body); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

// FuzzRecord feeds arbitrary bytes to the frame and record decoders: they
// must never panic, and whatever parses must re-encode to the same body.
func FuzzRecord(f *testing.F) {
	for _, b := range sampleRecords() {
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Add(make([]byte, 16))
	f.Fuzz(func(t *testing.T, b []byte) {
		body, n, err := frame(b, 0)
		if err != nil || n == 0 {
			// also try the decoder on the raw bytes
			var r rec
			r.parse(b)
			return
		}
		var r rec
		if err := r.parse(body); err != nil {
			return
		}
		var again []byte
		switch r.kind {
		case kMessage, kCopy:
			again = appendMessage(nil, r.kind, r.id, r.message(), r.held, r.states, r.content)
		case kOutcome:
			again = appendOutcome(nil, r.id, r.rcpt, Status(r.st.status), int(r.st.attempts), r.st.next, string(r.st.reason))
		case kAttempt:
			again = appendAttempt(nil, r.id, r.rcpt, int(r.st.attempts), r.st.next)
		case kHold, kRelease:
			again = appendSimple(nil, r.kind, r.id)
		case kDone:
			again = appendDone(nil, r.id, r.first, r.last)
		case kSnapshot:
			again = appendSnapshot(nil, r.id, r.held, r.states)
		}
		var r2 rec
		b2, _, err := frame(again, 0)
		if err != nil {
			t.Fatalf("re-encoded frame: %v", err)
		}
		if err := r2.parse(b2); err != nil {
			t.Fatalf("re-encoded record does not parse: %v", err)
		}
		if r2.kind != r.kind || r2.id != r.id || !bytes.Equal(r2.content, r.content) || len(r2.rcpts) != len(r.rcpts) || len(r2.states) != len(r.states) {
			t.Fatalf("round trip differs")
		}
	})
}

func crc32c(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }
