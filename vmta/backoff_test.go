package vmta

import (
	"testing"
	"time"
)

func TestBackoffModes(t *testing.T) {
	var changes []Change
	b := NewBackoff(func(c Change) { changes = append(changes, c) })
	now := time.Unix(1000, 0)
	q := "example.com/a"
	if b.Mode(q, now) != ModeNormal {
		t.Fatal("new queue not normal")
	}
	if !b.SetMode(q, ModeBackoff, "421 4.7.0 slow down", now, time.Hour) {
		t.Fatal("no change reported")
	}
	if b.SetMode(q, ModeBackoff, "421 again", now.Add(time.Minute), time.Hour) {
		t.Fatal("backoff while in backoff reported as a change")
	}
	if m := b.Mode(q, now.Add(time.Hour)); m != ModeBackoff {
		t.Fatal("the second match should have extended the backoff")
	}
	if m := b.Mode(q, now.Add(61*time.Minute)); m != ModeNormal {
		t.Fatalf("mode %v after backoff-to-normal-after", m)
	}
	b.SetMode(q, ModeBackoff, "x", now, 0)
	if b.Mode(q, now.Add(1000*time.Hour)) != ModeBackoff {
		t.Fatal("normalAfter 0 must not end by time")
	}
	b.SetMode(q, ModeNormal, "250 ok", now, 0)
	if len(changes) != 4 || changes[0].What != "mode backoff" || changes[0].Reason != "421 4.7.0 slow down" || changes[1].What != "mode normal" {
		t.Fatalf("changes %+v", changes)
	}
	if c := b.Counts(); c.ToBackoff != 2 || c.ToNormal != 2 {
		t.Fatalf("counts %+v", c)
	}
}

func TestDisableSource(t *testing.T) {
	b := NewBackoff(nil)
	now := time.Unix(1000, 0)
	b.DisableSource("example.com", "127.0.0.2", now.Add(time.Minute), "550 blocked", now)
	if off, until := b.SourceDisabled("example.com", "127.0.0.2", now); !off || until != now.Add(time.Minute) {
		t.Fatal("not disabled")
	}
	if off, _ := b.SourceDisabled("other.example", "127.0.0.2", now); off {
		t.Fatal("disabled for another queue")
	}
	if len(b.Disabled()) != 1 {
		t.Fatal("Disabled()")
	}
	if off, _ := b.SourceDisabled("example.com", "127.0.0.2", now.Add(time.Minute)); off {
		t.Fatal("still disabled after its time")
	}
	if c := b.Counts(); c.SourcesDisabled != 1 || c.SourcesEnabled != 1 || len(b.Disabled()) != 0 {
		t.Fatalf("counts %+v", c)
	}
}
