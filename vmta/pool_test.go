package vmta

import (
	"fmt"
	"math"
	"testing"
)

func TestPickWeights(t *testing.T) {
	members := []Member{{"a", 1}, {"b", 2}, {"c", 5}}
	n := map[string]int{}
	const total = 20000
	for i := 0; i < total; i++ {
		name, ok := Pick(members, fmt.Sprintf("ID%08d", i), 0, nil)
		if !ok {
			t.Fatal("no pick")
		}
		n[name]++
	}
	for _, m := range members {
		want := float64(m.Weight) / 8
		got := float64(n[m.Name]) / total
		if math.Abs(got-want) > 0.02 {
			t.Errorf("%s: share %.3f, want %.3f", m.Name, got, want)
		}
	}
}

// Disabling a member moves only its recipients; enabling it brings them back.
func TestPickSticky(t *testing.T) {
	members := []Member{{"a", 1}, {"b", 1}, {"c", 1}}
	noB := func(s string) bool { return s != "b" }
	moved := 0
	for i := 0; i < 1000; i++ {
		id := fmt.Sprintf("ID%d", i)
		first, _ := Pick(members, id, 3, nil)
		again, _ := Pick(members, id, 3, nil)
		if first != again {
			t.Fatal("not deterministic")
		}
		without, _ := Pick(members, id, 3, noB)
		if without == "b" {
			t.Fatal("picked an unusable member")
		}
		if first != "b" && without != first {
			t.Fatalf("%s moved from %s to %s though %s is usable", id, first, without, first)
		}
		if first == "b" {
			moved++
		}
	}
	if moved < 250 || moved > 420 {
		t.Fatalf("%d of 1000 on b", moved)
	}
	if _, ok := Pick(members, "x", 0, func(string) bool { return false }); ok {
		t.Fatal("picked with nothing usable")
	}
}
