package cliflag_test

import (
	"errors"
	"flag"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/prego/testreset/internal/cliflag"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		lo, hi     int
		wantPos    []string
		wantTags   []string
		wantJSON   bool
		wantErr    string // "" for success
		wantUsage  bool
		wantHelpEr bool
	}{
		{name: "no arguments", lo: 0, hi: 0},
		{name: "flags before", args: []string{"--json", "--tag", "a", "plan"}, lo: 1, hi: 1, wantPos: []string{"plan"}, wantTags: []string{"a"}, wantJSON: true},
		{name: "flags after", args: []string{"plan", "--tag", "a", "--json"}, lo: 1, hi: 1, wantPos: []string{"plan"}, wantTags: []string{"a"}, wantJSON: true},
		{name: "flags between", args: []string{"a", "--tag=x", "b", "--tag", "y", "c"}, lo: 0, hi: cliflag.Unlimited, wantPos: []string{"a", "b", "c"}, wantTags: []string{"x", "y"}},
		{name: "after a double dash", args: []string{"--", "-odd"}, lo: 1, hi: 1, wantPos: []string{"-odd"}},
		{name: "stray argument", args: []string{"x"}, lo: 0, hi: 0, wantErr: `unexpected argument "x"`, wantUsage: true},
		{name: "too few", args: nil, lo: 1, hi: 1, wantErr: "want 1 argument(s), got 0", wantUsage: true},
		{name: "too many", args: []string{"a", "b"}, lo: 1, hi: 1, wantErr: "want 1 argument(s), got 2", wantUsage: true},
		{name: "outside a range", args: []string{"a", "b", "c"}, lo: 0, hi: 2, wantErr: "want 0 to 2 argument(s), got 3", wantUsage: true},
		{name: "below unlimited", args: nil, lo: 1, hi: cliflag.Unlimited, wantErr: "want at least 1 argument(s), got 0", wantUsage: true},
		{name: "unknown flag", args: []string{"--bogus"}, wantErr: "flag provided but not defined: -bogus", wantUsage: true},
		{name: "unknown flag after an argument", args: []string{"a", "--bogus"}, lo: 1, hi: 1, wantErr: "flag provided but not defined: -bogus", wantUsage: true},
		{name: "help", args: []string{"-h"}, wantErr: flag.ErrHelp.Error(), wantHelpEr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := cliflag.NewFlagSet("test", io.Discard)
			var tags cliflag.Strings
			fs.Var(&tags, "tag", "repeatable")
			asJSON := fs.Bool("json", false, "json")
			err := cliflag.Parse(fs, tt.args, tt.lo, tt.hi)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				var u *cliflag.UsageError
				if got := errors.As(err, &u); got != tt.wantUsage {
					t.Errorf("usage error: got %v, want %v", got, tt.wantUsage)
				}
				if got := errors.Is(err, flag.ErrHelp); got != tt.wantHelpEr {
					t.Errorf("flag.ErrHelp: got %v, want %v", got, tt.wantHelpEr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			if got := fs.Args(); !slices.Equal(got, tt.wantPos) && !(len(got) == 0 && len(tt.wantPos) == 0) {
				t.Errorf("positional: got %q, want %q", got, tt.wantPos)
			}
			if got := []string(tags); !slices.Equal(got, tt.wantTags) {
				t.Errorf("tags: got %q, want %q", got, tt.wantTags)
			}
			if *asJSON != tt.wantJSON {
				t.Errorf("json: got %v, want %v", *asJSON, tt.wantJSON)
			}
		})
	}
}

func TestStringsString(t *testing.T) {
	s := cliflag.Strings{"a", "b"}
	if got, want := s.String(), "a,b"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
