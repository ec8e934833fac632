package qid

import (
	"testing"
	"time"
)

func TestNewRoundTrip(t *testing.T) {
	at := time.Date(2026, 11, 29, 10, 18, 33, 123456000, time.UTC)
	seen := map[string]bool{}
	for i := 0; i < 10000; i++ {
		id := New(at)
		if err := Check(id); err != nil {
			t.Fatalf("New made an id Check refuses: %v", err)
		}
		if seen[id] {
			t.Fatalf("duplicate id %s after %d", id, i)
		}
		seen[id] = true
		got, err := Time(id)
		if err != nil {
			t.Fatal(err)
		}
		if !got.Equal(at) {
			t.Fatalf("Time(%s) = %v, want %v", id, got, at)
		}
	}
}

func TestCheckRejects(t *testing.T) {
	good := New(time.Unix(1_800_000_000, 0))
	for _, tc := range []struct{ name, id string }{
		{"empty", ""},
		{"short", good[:Len-1]},
		{"long", good + "0"},
		{"vowel", "A" + good[1:]},
		{"no separator", good[:10] + "0" + good[11:]},
		{"z in tail", good[:11] + "z" + good[12:]},
		{"path", "../../etc/passwd"},
		{"slash", good[:3] + "/" + good[4:]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := Check(tc.id); err == nil {
				t.Fatalf("Check(%q) accepted", tc.id)
			}
		})
	}
}

func TestOrderFollowsTime(t *testing.T) {
	a := New(time.Unix(1_800_000_000, 1000))
	b := New(time.Unix(1_800_000_001, 0))
	if !(a[:10] < b[:10]) {
		t.Fatalf("time prefix not ordered: %s !< %s", a, b)
	}
}

func FuzzCheck(f *testing.F) {
	f.Add(New(time.Now()))
	f.Add("")
	f.Add("zzzzzzzzzzzzzzzz")
	f.Fuzz(func(t *testing.T, id string) {
		if Check(id) == nil {
			if _, err := Time(id); err != nil {
				t.Fatalf("Check ok but Time fails: %v", err)
			}
		}
	})
}

// BenchmarkCheck: every append to the spool checks its id.
func BenchmarkCheck(b *testing.B) {
	id := New(time.Now())
	for b.Loop() {
		if err := Check(id); err != nil {
			b.Fatal(err)
		}
	}
}
