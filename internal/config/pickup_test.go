package config

import (
	"reflect"
	"strings"
	"testing"
)

func TestPickup(t *testing.T) {
	tests := []struct {
		raw  string
		want any
		err  string
	}{
		{"/var/pickup /var/badmail", Pickup{"/var/pickup", "/var/badmail"}, ""},
		{"/var/pickup/  /var/bad/../badmail", Pickup{"/var/pickup", "/var/badmail"}, ""},
		{"/var/pickup", nil, "want DIR BADMAIL-DIR"},
		{"/a /b /c", nil, "want DIR BADMAIL-DIR"},
		{"pickup /var/badmail", nil, "not an absolute path"},
		{"/var/pickup /var/pickup/", nil, "must be outside"},
		{"/var/pickup /var/pickup/bad", nil, "must be outside"},
	}
	for _, tt := range tests {
		got, err := parseValue(dir(t, KindGlobal, "pickup"), tt.raw, t.TempDir())
		if tt.want == nil {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: got (%v, %v), want error containing %q", tt.raw, got, err, tt.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%q: got (%#v, %v), want %#v", tt.raw, got, err, tt.want)
		}
	}

	cfg, err := Parse("t.conf", []byte("pickup /p1 /b1\npickup /p2 /b2\n"))
	if err != nil {
		t.Fatal(err)
	}
	got := cfg.Global().Pickups("pickup")
	if want := []Pickup{{"/p1", "/b1"}, {"/p2", "/b2"}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Pickups = %#v, want %#v", got, want)
	}
	cfg, err = Parse("t.conf", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Global().Pickups("pickup"); len(got) != 0 {
		t.Fatalf("unset: %#v", got)
	}
}
