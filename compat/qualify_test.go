package compat

import "testing"

func TestQualifyHeader(t *testing.T) {
	tests := []struct{ in, want string }{
		{"To: root\n", "To: root@o.example\n"},
		{"To: root, Other <someuser>\n", "To: root@o.example, Other <someuser@o.example>\n"},
		{"To: a@b, c\n", "To: a@b, c@o.example\n"},
		{"To: X <x@y>, a@b.example\n", "To: X <x@y>, a@b.example\n"},
		{"From: localuser\n", "From: localuser@o.example\n"},
		{"To: root (the admin)\n", "To: root@o.example (the admin)\n"},
		{"To: \"q r\"\n", "To: \"q r\"@o.example\n"},
		{"To: undisclosed-recipients:;\n", "To: undisclosed-recipients:;\n"},
		{"To: team: a, b@x;\n", "To: team: a@o.example, b@x;\n"},
		{"To: a,\n b\n", "To: a@o.example,\n b@o.example\n"},
		{"To: <>\n", "To: <>\n"},
		{"To: John Doe\n", "To: John Doe\n"},
		{"To: u@[1.2.3.4]\n", "To: u@[1.2.3.4]\n"},
	}
	for _, tt := range tests {
		name := tt.in[:indexColon(tt.in)]
		if got := qualifyHeader(tt.in, len(name), "o.example"); got != tt.want {
			t.Errorf("qualifyHeader(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func indexColon(s string) int {
	for i := range s {
		if s[i] == ':' {
			return i
		}
	}
	return 0
}

func FuzzQualifyHeader(f *testing.F) {
	for _, s := range []string{"To: a, b <c>", "To: \"x\" (y) [z]", "To: g: a;", "To: <", "To: (\\"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) < 3 {
			return
		}
		got := qualifyHeader(s, 2, "o.example")
		if len(got) < len(s) {
			t.Fatalf("lost text: %q -> %q", s, got)
		}
	})
}
