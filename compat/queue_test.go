package compat

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

// loadPostfixQueue reads the postqueue -j golden made by a real Postfix
// (testdata/postfix-golden.sh) into entries.
func loadPostfixQueue(t *testing.T) []QueueEntry {
	t.Helper()
	f, err := os.Open("testdata/postfix/mailq.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []QueueEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m struct {
			QueueName    string `json:"queue_name"`
			QueueID      string `json:"queue_id"`
			ArrivalTime  int64  `json:"arrival_time"`
			MessageSize  int64  `json:"message_size"`
			ForcedExpire bool   `json:"forced_expire"`
			Sender       string `json:"sender"`
			Recipients   []struct {
				Address     string `json:"address"`
				OrigAddress string `json:"orig_address"`
				DelayReason string `json:"delay_reason"`
			} `json:"recipients"`
		}
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatal(err)
		}
		e := QueueEntry{ID: m.QueueID, Arrival: time.Unix(m.ArrivalTime, 0), Size: m.MessageSize,
			Sender: m.Sender, Expire: m.ForcedExpire, Held: m.QueueName == "hold", Active: m.QueueName == "active"}
		for _, r := range m.Recipients {
			e.Rcpts = append(e.Rcpts, QueueRcpt{Addr: r.Address, Orig: r.OrigAddress, Reason: r.DelayReason})
		}
		out = append(out, e)
	}
	if len(out) == 0 {
		t.Fatal("empty golden queue")
	}
	return out
}

func TestWriteMailqMatchesPostfix(t *testing.T) {
	entries := loadPostfixQueue(t)
	want, err := os.ReadFile("testdata/postfix/mailq.txt")
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if err := WriteMailq(&got, entries, time.UTC); err != nil {
		t.Fatal(err)
	}
	if got.String() != string(want) {
		gl, wl := strings.Split(got.String(), "\n"), strings.Split(string(want), "\n")
		for i := 0; i < len(gl) && i < len(wl); i++ {
			if gl[i] != wl[i] {
				t.Fatalf("line %d:\n got %q\nwant %q", i+1, gl[i], wl[i])
			}
		}
		t.Fatalf("length differs: got %d lines, want %d", len(gl), len(wl))
	}
}

func TestWriteJSONMatchesPostfix(t *testing.T) {
	entries := loadPostfixQueue(t)
	want, err := os.ReadFile("testdata/postfix/mailq.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if err := WriteJSON(&got, entries); err != nil {
		t.Fatal(err)
	}
	if got.String() != string(want) {
		t.Fatalf("got\n%s\nwant\n%s", got.String(), want)
	}
}

func TestWriteMailqEmpty(t *testing.T) {
	want, err := os.ReadFile("testdata/postfix/mailq-empty.txt")
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if err := WriteMailq(&got, nil, time.UTC); err != nil {
		t.Fatal(err)
	}
	if got.String() != string(want) {
		t.Fatalf("got %q want %q", got.String(), want)
	}
}

func TestMailqMarkersAndReasons(t *testing.T) {
	at := time.Date(2026, 3, 5, 10, 12, 30, 0, time.UTC)
	entries := []QueueEntry{
		{ID: "4jckGV1dtNz1SGLS", Active: true, Arrival: at, Size: 2048, Sender: "",
			Rcpts: []QueueRcpt{{Addr: "a@x"}, {Addr: "b@x", Reason: "r1"}, {Addr: "c@x", Reason: "r1"}, {Addr: "d@x", Reason: "r2"}}},
		{ID: "4jckGV1dtNz1SGLT", Expire: true, Arrival: at, Size: 1, Sender: "s@x", Rcpts: []QueueRcpt{{Addr: "e@x"}}},
	}
	var got bytes.Buffer
	if err := WriteMailq(&got, entries, time.UTC); err != nil {
		t.Fatal(err)
	}
	want := mailqHeading +
		"4jckGV1dtNz1SGLS*     2048 Thu Mar  5 10:12:30 MAILER-DAEMON\n" +
		rcptIndent + "a@x\n" +
		strings.Repeat(" ", 74) + "(r1)\n" +
		rcptIndent + "b@x\n" + rcptIndent + "c@x\n" +
		strings.Repeat(" ", 74) + "(r2)\n" +
		rcptIndent + "d@x\n\n" +
		"4jckGV1dtNz1SGLT#        1 Thu Mar  5 10:12:30 s@x\n" +
		rcptIndent + "e@x\n\n" +
		"-- 2 Kbytes in 2 Requests.\n"
	if got.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", got.String(), want)
	}
}

func TestJSONEscaping(t *testing.T) {
	e := QueueEntry{ID: "X", Sender: "a\"b\\c\n\x01\xff\u00e9", Rcpts: []QueueRcpt{{Addr: "r@x", Orig: "R@x", Reason: "t\tab"}}}
	line := AppendJSON(nil, &e)
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		t.Fatalf("invalid JSON %s: %v", line, err)
	}
	if m["sender"] != "a\"b\\c\n\x01\ufffd\u00e9" {
		t.Errorf("sender round trip: %q", m["sender"])
	}
	if !bytes.Contains(line, []byte(`"orig_address": "R@x"`)) {
		t.Errorf("orig_address missing: %s", line)
	}
}

// BenchmarkMailq100k measures rendering the listing of 100,000 messages,
// the work behind `mailq | tail -1` on a large queue.
func BenchmarkMailq100k(b *testing.B) {
	entries := make([]QueueEntry, 100000)
	at := time.Now()
	for i := range entries {
		entries[i] = QueueEntry{ID: "4jckGV1dtNz1SGLS", Arrival: at, Size: 4000, Sender: "sender@example.org",
			Rcpts: []QueueRcpt{{Addr: "rcpt@example.net", Reason: "connect to mx.example.net[192.0.2.1]:25: Connection timed out"}}}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := WriteMailq(discard{}, entries, time.UTC); err != nil {
			b.Fatal(err)
		}
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
